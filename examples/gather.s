; gather.s: z[r][l] = table[map[r][l]][l] for 4 vectors on the published chip: every
; lane reads its own word of the table (a per-lane lookup).
;
; The map is a 2-stream group of uint16 addresses (stored as an int16 tensor whose two
; byte planes are in W2 and W3); the gather runs on the slice that holds the table (W0)
; and reads the map there on its issue cycle.
; tsp_v1 positions: MEM W slice s at 47 - s, E1 at 50.
; Latencies: mem_read 3, mem_gather 4, mem_write 1.

.chip tsp_v1
.const ROWS 4
.const T_G 3+3                 ; 6: map plane 1 is in W3, 3 positions west of W0
.const T_Z T_G+4               ; 10: the gathered vector is at W0

.input  table i8  [64,320]   hemi=W addr=0 slices=0
.input  map   i16 [ROWS,320] hemi=W addr=0 slices=2,3
.output z     i8  [ROWS,320] hemi=E addr=0 slices=1

.alias MAP s0e                 ; the group s0e (low bytes), s1e (high bytes)

.queue mem.W3.0
    @T_G-3-3 read 0, s1e       ; 0: high bytes, 3 positions west of W0
    repeat ROWS-1, 1
.queue mem.W2.0
    @T_G-3-2 read 0, s0e       ; 1: low bytes, 2 positions west of W0
    repeat ROWS-1, 1
.queue mem.W0.0
    @T_G gather MAP, s2e       ; 6: lane l = byte l of word map[l]; on s2e at W0 on 10
    repeat ROWS-1, 1
.queue mem.E1.0
    @T_Z+3 write 0, s2e        ; 13: E1 is 3 positions east of W0; the last write on 16
    repeat ROWS-1, 1           ; lands on 17: 17 + 1 + 19 = 37 cycles
