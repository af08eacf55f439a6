; matmul_fp16.s: Y = X @ W for 4 fp16 activation vectors and a 320 x 320 fp16 weight
; matrix on the published chip (tsp_v1), fp32 results (products exact, summed in fp32
; in k order: docs/numerics.md).
;
; An fp16 row is two byte planes, so one lw (16 streams) loads 8 rows: row 8j+i's low
; bytes on s(2i)w and high bytes on s(2i+1)w. W is stored with split=8 over 16 slices:
; row v, plane b is in slice W(28 + 8b + v % 8) at address v // 8; 40 lw fill the plane.
; An fp16 abc keeps the plane busy 4 cycles, so activations go in every 4th cycle.
;
; tsp_v1 positions: MEM W slice s is at 47 - s, 46 - s positions from MXM plane 0.
; Latencies: mem_read 3, mxm_lw 1, mxm_iw 4, mxm_abc 24, mxm_acc 4, mem_write 1.

.chip tsp_v1
.const M 4
.const LW 40                   ; 320 rows / 8 rows per lw
.const T_LW 21                 ; W28 (low bytes of rows 8j) is 18 away: 3 + 18
.const T_IW T_LW+LW            ; 61
.const T_ABC T_IW+4            ; 65
.const T_ACC T_ABC+24          ; 89
.const T_Y T_ACC+4             ; 93: slot 0's fp32 sums are on s0e..s3e at the plane

.input  w f16 [320,320] hemi=W addr=0 slices=28-43 split=8
.input  x f16 [M,320]   hemi=W addr=0 slices=26,27
.output y f32 [M,320]   hemi=W addr=0 slices=20-23

; Low bytes of row 8j+i: slice 28+i (18 - i away) -> s(2i)w, issue on 21 - 3 - (18 - i) = i.
; High bytes: slice 36+i (10 - i away) -> s(2i+1)w, issue on 21 - 3 - (10 - i) = 8 + i.
.queue mem.W28.0
    @0 read 0, s0w             ; low bytes of rows 8j+0, 18 positions away
    repeat LW-1, 1
.queue mem.W29.0
    @1 read 0, s2w             ; low bytes of rows 8j+1, 17 positions away
    repeat LW-1, 1
.queue mem.W30.0
    @2 read 0, s4w             ; low bytes of rows 8j+2, 16 positions away
    repeat LW-1, 1
.queue mem.W31.0
    @3 read 0, s6w             ; low bytes of rows 8j+3, 15 positions away
    repeat LW-1, 1
.queue mem.W32.0
    @4 read 0, s8w             ; low bytes of rows 8j+4, 14 positions away
    repeat LW-1, 1
.queue mem.W33.0
    @5 read 0, s10w            ; low bytes of rows 8j+5, 13 positions away
    repeat LW-1, 1
.queue mem.W34.0
    @6 read 0, s12w            ; low bytes of rows 8j+6, 12 positions away
    repeat LW-1, 1
.queue mem.W35.0
    @7 read 0, s14w            ; low bytes of rows 8j+7, 11 positions away
    repeat LW-1, 1
.queue mem.W36.0
    @8 read 0, s1w             ; high bytes of rows 8j+0, 10 positions away
    repeat LW-1, 1
.queue mem.W37.0
    @9 read 0, s3w             ; high bytes of rows 8j+1, 9 positions away
    repeat LW-1, 1
.queue mem.W38.0
    @10 read 0, s5w            ; high bytes of rows 8j+2, 8 positions away
    repeat LW-1, 1
.queue mem.W39.0
    @11 read 0, s7w            ; high bytes of rows 8j+3, 7 positions away
    repeat LW-1, 1
.queue mem.W40.0
    @12 read 0, s9w            ; high bytes of rows 8j+4, 6 positions away
    repeat LW-1, 1
.queue mem.W41.0
    @13 read 0, s11w           ; high bytes of rows 8j+5, 5 positions away
    repeat LW-1, 1
.queue mem.W42.0
    @14 read 0, s13w           ; high bytes of rows 8j+6, 4 positions away
    repeat LW-1, 1
.queue mem.W43.0
    @15 read 0, s15w           ; high bytes of rows 8j+7, 3 positions away
    repeat LW-1, 1

.queue mxm0.ld
    @T_LW lw f16, s0w          ; 21..60: 8 rows per lw
    repeat LW-1, 1
    iw 0                       ; 61: usable on 65

; X[m]: low bytes from W26 (20 away) on s16w, high bytes from W27 (19 away) on s17w,
; every 4 cycles from T_ABC.
.queue mem.W26.0
    @T_ABC-3-20 read 0, s16w   ; 42, 46, 50, 54
    repeat M-1, 4
.queue mem.W27.0
    @T_ABC-3-19 read 0, s17w   ; 43, 47, 51, 55
    repeat M-1, 4
.queue mxm0.abc
    @T_ABC abc s16w, 0, 0      ; 65, 69, 73, 77 into slots 0..3
    repeat M-1, 4
.queue mxm0.acc
    @T_ACC acc 0, s0e          ; 89, 93, 97, 101
    repeat M-1, 4

; Result plane b goes to W(20+b), 26 - b positions east: T_Y + 26 - b.
.queue mem.W20.0
    @T_Y+26 write 0, s0e       ; 119, then every 4 cycles
    repeat M-1, 4              ; the last write (plane 0, row 3) on 131 lands on 132:
                               ; 132 + 1 + 19 = 152 cycles
.queue mem.W21.0
    @T_Y+25 write 0, s1e       ; 118, then every 4 cycles
    repeat M-1, 4
.queue mem.W22.0
    @T_Y+24 write 0, s2e       ; 117, then every 4 cycles
    repeat M-1, 4
.queue mem.W23.0
    @T_Y+23 write 0, s3e       ; 116, then every 4 cycles
    repeat M-1, 4
