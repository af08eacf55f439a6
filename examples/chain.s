; chain.s: y = relu(a * x + b) in fp32 on three VXM ALUs of the published chip,
; without touching MEM between the operations: each ALU reads the previous one's result
; (alu3, alu6) on exactly the cycle it is produced (docs/timing.md rule 6).
;
; tsp_v1 positions: VXM 48, MEM W slice s at 47 - s, MEM E slice s at 49 + s.
; Latencies: mem_read 3, vxm_mul 3, vxm_basic 2 (add, relu), mem_write 1.
; a: W0-3 (eastward s0e..s3e), x: W4-7 (s4e..s7e), b: E0-3 (westward s8w..s11w),
; y: E4-7 (s12e..s15e).

.chip tsp_v1
.const ROWS 4
.const T_MUL 11                ; x plane 3 is in W7, 8 positions west: 3 + 8
.const T_ADD T_MUL+3           ; the product exists on 14 (vxm_mul = 3)
.const T_RELU T_ADD+2          ; the sum exists on 16
.const T_Y T_RELU+2            ; relu's result is at the VXM on 18

.input  a f32 [ROWS,320] hemi=W addr=0 slices=0-3
.input  x f32 [ROWS,320] hemi=W addr=0 slices=4-7
.input  b f32 [ROWS,320] hemi=E addr=0 slices=0-3
.output y f32 [ROWS,320] hemi=E addr=0 slices=4-7

.alias MUL vxm.alu3
.alias ADD vxm.alu6
.alias RELU vxm.alu7           ; relu needs a large ALU (0, 2, 5, 7, 8, 10, 13, 15)

; a and x reach the VXM on T_MUL: slice s (distance s + 1) reads on T_MUL - 3 - (s + 1).
.queue mem.W0.0
    @T_MUL-4 read 0, s0e
    repeat ROWS-1, 1
.queue mem.W1.0
    @T_MUL-5 read 0, s1e
    repeat ROWS-1, 1
.queue mem.W2.0
    @T_MUL-6 read 0, s2e
    repeat ROWS-1, 1
.queue mem.W3.0
    @T_MUL-7 read 0, s3e
    repeat ROWS-1, 1
.queue mem.W4.0
    @T_MUL-8 read 0, s4e
    repeat ROWS-1, 1
.queue mem.W5.0
    @T_MUL-9 read 0, s5e
    repeat ROWS-1, 1
.queue mem.W6.0
    @T_MUL-10 read 0, s6e
    repeat ROWS-1, 1
.queue mem.W7.0
    @T_MUL-11 read 0, s7e      ; issue on 0
    repeat ROWS-1, 1
; b comes westward from the East slices and must be at the VXM on T_ADD: E slice s is
; s + 1 positions east, so it reads on T_ADD - 3 - (s + 1).
.queue mem.E0.0
    @T_ADD-4 read 0, s8w
    repeat ROWS-1, 1
.queue mem.E1.0
    @T_ADD-5 read 0, s9w
    repeat ROWS-1, 1
.queue mem.E2.0
    @T_ADD-6 read 0, s10w
    repeat ROWS-1, 1
.queue mem.E3.0
    @T_ADD-7 read 0, s11w
    repeat ROWS-1, 1

.queue MUL
    @T_MUL mul f32, s0e, s4e, -        ; 11: a * x, result only chained (no stream)
    repeat ROWS-1, 1
.queue ADD
    @T_ADD add f32, alu3, s8w, -       ; 14: ALU 3's product + b
    repeat ROWS-1, 1
.queue RELU
    @T_RELU relu f32, alu6, s12e       ; 16: relu of ALU 6's sum onto s12e..s15e on 18
    repeat ROWS-1, 1

; y plane p reaches E(4+p), 5 + p positions east, on T_Y + 5 + p.
.queue mem.E4.1
    @T_Y+5 write 0, s12e
    repeat ROWS-1, 1
.queue mem.E5.1
    @T_Y+6 write 0, s13e
    repeat ROWS-1, 1
.queue mem.E6.1
    @T_Y+7 write 0, s14e
    repeat ROWS-1, 1
.queue mem.E7.1
    @T_Y+8 write 0, s15e       ; 26; the last on 29 lands on 30: 30 + 1 + 19 = 50 cycles
    repeat ROWS-1, 1
