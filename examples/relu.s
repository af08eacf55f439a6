; relu.s: z = relu(x) for 4 fp32 vectors on the published chip.
;
; An fp32 vector travels on a group of 4 streams (byte 0 on the lowest), each byte plane
; stored in its own MEM slice (slices=0-3), so one cycle reads all four planes. Each
; plane is read on the cycle its slice's position requires, so that all four arrive at
; the VXM together; the result planes leave together and reach E0..E3 one cycle apart.
; tsp_v1 positions: VXM 48, MEM W slice s at 47 - s, MEM E slice s at 49 + s.
; Latencies: mem_read 3, vxm_basic 2 (relu), mem_write 1. relu runs on a large ALU.

.chip tsp_v1
.const ROWS 4
.const T_RELU 3+4              ; 7: plane 3 (W3) is 4 positions from the VXM
.const T_OUT T_RELU+2          ; 9: the result is at the VXM

.input  x f32 [ROWS,320] hemi=W addr=0 slices=0-3
.output z f32 [ROWS,320] hemi=E addr=0 slices=0-3

.queue mem.W3.0
    @T_RELU-3-4 read 0, s3e    ; 0: plane 3, 4 positions away
    repeat ROWS-1, 1
.queue mem.W2.0
    @T_RELU-3-3 read 0, s2e    ; 1: plane 2, 3 positions away
    repeat ROWS-1, 1
.queue mem.W1.0
    @T_RELU-3-2 read 0, s1e    ; 2
    repeat ROWS-1, 1
.queue mem.W0.0
    @T_RELU-3-1 read 0, s0e    ; 3
    repeat ROWS-1, 1
.queue vxm.alu0
    @T_RELU relu f32, s0e, s4e ; 7: reads s0e..s3e, puts s4e..s7e at the VXM on 9
    repeat ROWS-1, 1
.queue mem.E0.0
    @T_OUT+1 write 0, s4e      ; 10: E0 is 1 position east
    repeat ROWS-1, 1
.queue mem.E1.0
    @T_OUT+2 write 0, s5e      ; 11
    repeat ROWS-1, 1
.queue mem.E2.0
    @T_OUT+3 write 0, s6e      ; 12
    repeat ROWS-1, 1
.queue mem.E3.0
    @T_OUT+4 write 0, s7e      ; 13; the last (row 3) on 16 lands on 17:
    repeat ROWS-1, 1           ; 17 + 1 + 19 = 37 cycles
