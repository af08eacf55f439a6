; transpose.s: two 16 x 16 byte transposes per superlane on the published chip.
; Input block k is 16 int8 vectors X[0..15]; the result Y has Y[i] lane 16g+j = X[j]
; lane 16g+i: the 16 x 16 block of bytes of every superlane g (20 of them) is transposed.
;
; transpose takes 16 streams in one cycle, so the 16 vectors come from 16 MEM slices
; (the tensor is split=16 over W28..W43: vector v is in W(28 + v % 16) at address
; v // 16), on westward streams s0w..s15w to the West SXM (position 3); the results go
; east on s0e..s15e back to the same slices at address 8, through their second port.
; tsp_v1 positions: MEM W slice s at 47 - s, so 44 - s positions east of the SXM.
; Latencies: mem_read 3, sxm_transpose 8, mem_write 1.

.chip tsp_v1
.const BLOCKS 2
.const T 3+16                  ; 19: W28, the farthest slice, is 16 positions away
.const T_Y T+8                 ; 27: the transposed streams are at the SXM

.input  x i8 [16*BLOCKS,320] hemi=W addr=0 slices=28-43 split=16
.output y i8 [16*BLOCKS,320] hemi=W addr=8 slices=28-43 split=16

; Reads: X[j] from W(28+j), 16 - j positions away, issues on T - 3 - (16 - j) = j.
.queue mem.W28.0
    @0 read 0, s0w
    repeat BLOCKS-1, 1
.queue mem.W29.0
    @1 read 0, s1w
    repeat BLOCKS-1, 1
.queue mem.W30.0
    @2 read 0, s2w
    repeat BLOCKS-1, 1
.queue mem.W31.0
    @3 read 0, s3w
    repeat BLOCKS-1, 1
.queue mem.W32.0
    @4 read 0, s4w
    repeat BLOCKS-1, 1
.queue mem.W33.0
    @5 read 0, s5w
    repeat BLOCKS-1, 1
.queue mem.W34.0
    @6 read 0, s6w
    repeat BLOCKS-1, 1
.queue mem.W35.0
    @7 read 0, s7w
    repeat BLOCKS-1, 1
.queue mem.W36.0
    @8 read 0, s8w
    repeat BLOCKS-1, 1
.queue mem.W37.0
    @9 read 0, s9w
    repeat BLOCKS-1, 1
.queue mem.W38.0
    @10 read 0, s10w
    repeat BLOCKS-1, 1
.queue mem.W39.0
    @11 read 0, s11w
    repeat BLOCKS-1, 1
.queue mem.W40.0
    @12 read 0, s12w
    repeat BLOCKS-1, 1
.queue mem.W41.0
    @13 read 0, s13w
    repeat BLOCKS-1, 1
.queue mem.W42.0
    @14 read 0, s14w
    repeat BLOCKS-1, 1
.queue mem.W43.0
    @15 read 0, s15w
    repeat BLOCKS-1, 1

.queue sxm.W.trans0
    @T transpose s0w, s0e      ; 19: all 16 streams are at the SXM; results there on 27
    repeat BLOCKS-1, 1         ; block 1 on 20

; Writes: Y[i] reaches W(28+i), 16 - i positions east of the SXM, on T_Y + 16 - i.
.queue mem.W28.1
    @T_Y+16 write 8, s0e ; the last (block 1) on 44 lands on 45: 45 + 1 + 19 = 65 cycles
    repeat BLOCKS-1, 1
.queue mem.W29.1
    @T_Y+15 write 8, s1e
    repeat BLOCKS-1, 1
.queue mem.W30.1
    @T_Y+14 write 8, s2e
    repeat BLOCKS-1, 1
.queue mem.W31.1
    @T_Y+13 write 8, s3e
    repeat BLOCKS-1, 1
.queue mem.W32.1
    @T_Y+12 write 8, s4e
    repeat BLOCKS-1, 1
.queue mem.W33.1
    @T_Y+11 write 8, s5e
    repeat BLOCKS-1, 1
.queue mem.W34.1
    @T_Y+10 write 8, s6e
    repeat BLOCKS-1, 1
.queue mem.W35.1
    @T_Y+9 write 8, s7e
    repeat BLOCKS-1, 1
.queue mem.W36.1
    @T_Y+8 write 8, s8e
    repeat BLOCKS-1, 1
.queue mem.W37.1
    @T_Y+7 write 8, s9e
    repeat BLOCKS-1, 1
.queue mem.W38.1
    @T_Y+6 write 8, s10e
    repeat BLOCKS-1, 1
.queue mem.W39.1
    @T_Y+5 write 8, s11e
    repeat BLOCKS-1, 1
.queue mem.W40.1
    @T_Y+4 write 8, s12e
    repeat BLOCKS-1, 1
.queue mem.W41.1
    @T_Y+3 write 8, s13e
    repeat BLOCKS-1, 1
.queue mem.W42.1
    @T_Y+2 write 8, s14e
    repeat BLOCKS-1, 1
.queue mem.W43.1
    @T_Y+1 write 8, s15e
    repeat BLOCKS-1, 1
