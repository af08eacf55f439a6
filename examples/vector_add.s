; vector_add.s: z = x + y for 8 int8 vectors of 320 lanes on the published chip.
;
; Timing rule (docs/timing.md): a value produced at position p by an instruction issued
; on cycle t with latency d is read at position q by an instruction issued on
; t + d + |p - q|. Latencies: mem_read 3, vxm_basic 2 (add), mem_write 1.

.chip tsp_v1
.const ROWS 8
; Stream-register positions on tsp_v1 (ChipConfig.floorplan()):
.const VXM 48
.const W0 47                   ; MEM W0 and W1 are just west of the VXM
.const W1 46
.const E0 49                   ; MEM E0 just east of it
.const T_ADD 3+(VXM-W1)        ; 5: the first cycle y can be at the VXM

.input  x i8 [ROWS,320] hemi=W addr=0 slices=0
.input  y i8 [ROWS,320] hemi=W addr=0 slices=1
.output z i8 [ROWS,320] hemi=E addr=0 slices=0

.alias X s0e                   ; eastward streams: West MEM -> VXM -> East MEM
.alias Y s1e
.alias Z s2e

.queue mem.W1.0
    @T_ADD-3-(VXM-W1) read 0, Y ; 0: lands at W1 on 3, at the VXM on 5
    repeat ROWS-1, 1            ; addresses 1..7 on cycles 1..7
.queue mem.W0.0
    @T_ADD-3-(VXM-W0) read 0, X ; 1: W0 is one position closer
    repeat ROWS-1, 1
.queue vxm.alu1
    @T_ADD add i8, X, Y, Z      ; 5: both operands are at the VXM; the sum is there on 7
    repeat ROWS-1, 1
.queue mem.E0.0
    @T_ADD+2+(E0-VXM) write 0, Z ; 8: the sum reaches E0 one position later
    repeat ROWS-1, 1            ; the last write on 15 lands on 16:
                                ; 16 + 1 + 19 (superlane skew) = 36 cycles
