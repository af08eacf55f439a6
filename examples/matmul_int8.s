; matmul_int8.s: Y = X @ W for 8 int8 activation vectors X[m] (320 lanes) and one
; 320 x 320 int8 weight matrix W on the published chip (tsp_v1), int32 results.
;
; Data flow: 16 weight rows per cycle go west from MEM W28..W43 on s0w..s15w to MXM
; plane 0 (position 1); 20 lw load the whole plane; iw installs it; each abc multiplies
; one activation vector (from W27 on s16w) into its own accumulator slot (slot m for
; X[m]: repeat advances the slot); acc emits each slot's 320 int32 sums onto s0e..s3e
; (byte planes), which go east to W20..W23.
;
; tsp_v1 positions: MEM W slice s is at 47 - s, so it is 46 - s positions from plane 0.
; Latencies: mem_read 3, mxm_lw 1, mxm_iw 4, mxm_abc 24, mxm_acc 4, mem_write 1.
; The timing rule: a value produced at p on t + d is read at q on t + d + |p - q|.

.chip tsp_v1
.const M 8                     ; activation vectors
.const LW 20                   ; 320 rows / 16 rows per lw
.const T_LW 21                 ; W28, the farthest weight slice, is 18 away: 3 + 18
.const T_IW T_LW+LW            ; 41: the ld queue is free after the 20th lw
.const T_ABC T_IW+4            ; 45: the weights are usable mxm_iw = 4 cycles after iw
.const T_ACC T_ABC+24          ; 69: slot 0 holds X[0] @ W mxm_abc = 24 cycles after its abc
.const T_Y T_ACC+4             ; 73: the results are on s0e..s3e at plane 0

; W row v is in slice 28 + v % 16 at address v // 16: lw j takes rows 16j..16j+15.
.input  w i8  [320,320] hemi=W addr=0 slices=28-43 split=16
.input  x i8  [M,320]   hemi=W addr=0 slices=27
.output y i32 [M,320]   hemi=W addr=0 slices=20-23

.alias ACT s16w

; Weight reads: slice 28+i (18 - i positions away) puts row 16j+i on s{i}w so that it
; is at the plane on T_LW + j: issue on T_LW - 3 - (18 - i) = i, addresses 0..19.
.queue mem.W28.0
    @0 read 0, s0w             ; 18 positions from the plane
    repeat LW-1, 1
.queue mem.W29.0
    @1 read 0, s1w             ; 17 positions from the plane
    repeat LW-1, 1
.queue mem.W30.0
    @2 read 0, s2w             ; 16 positions from the plane
    repeat LW-1, 1
.queue mem.W31.0
    @3 read 0, s3w             ; 15 positions from the plane
    repeat LW-1, 1
.queue mem.W32.0
    @4 read 0, s4w             ; 14 positions from the plane
    repeat LW-1, 1
.queue mem.W33.0
    @5 read 0, s5w             ; 13 positions from the plane
    repeat LW-1, 1
.queue mem.W34.0
    @6 read 0, s6w             ; 12 positions from the plane
    repeat LW-1, 1
.queue mem.W35.0
    @7 read 0, s7w             ; 11 positions from the plane
    repeat LW-1, 1
.queue mem.W36.0
    @8 read 0, s8w             ; 10 positions from the plane
    repeat LW-1, 1
.queue mem.W37.0
    @9 read 0, s9w             ; 9 positions from the plane
    repeat LW-1, 1
.queue mem.W38.0
    @10 read 0, s10w           ; 8 positions from the plane
    repeat LW-1, 1
.queue mem.W39.0
    @11 read 0, s11w           ; 7 positions from the plane
    repeat LW-1, 1
.queue mem.W40.0
    @12 read 0, s12w           ; 6 positions from the plane
    repeat LW-1, 1
.queue mem.W41.0
    @13 read 0, s13w           ; 5 positions from the plane
    repeat LW-1, 1
.queue mem.W42.0
    @14 read 0, s14w           ; 4 positions from the plane
    repeat LW-1, 1
.queue mem.W43.0
    @15 read 0, s15w           ; 3 positions from the plane
    repeat LW-1, 1

.queue mxm0.ld
    @T_LW lw i8, s0w           ; 21..40: rows 16j..16j+15 from s0w..s15w
    repeat LW-1, 1
    iw 0                       ; 41 (T_IW): install; usable on 45

; X[m] comes from W27 (19 positions away): issue on T_ABC - 3 - 19 = 23, one per cycle.
.queue mem.W27.0
    @T_ABC-3-19 read 0, ACT
    repeat M-1, 1
.queue mxm0.abc
    @T_ABC abc ACT, 0, 0       ; 45..52: X[m] @ W into slot m (int8: one per cycle)
    repeat M-1, 1
.queue mxm0.acc
    @T_ACC acc 0, s0e          ; 69..76: slot m is ready 24 cycles after its abc
    repeat M-1, 1

; Result byte plane b goes to W(20+b), 26 - b positions east of the plane: T_Y + 26 - b.
.queue mem.W20.0
    @T_Y+26 write 0, s0e       ; 99..106
    repeat M-1, 1              ; the last write (plane 0, row 7) on 106 lands on 107:
                               ; 107 + 1 + 19 (superlane skew) = 127 cycles
.queue mem.W21.0
    @T_Y+25 write 0, s1e       ; 98..105
    repeat M-1, 1
.queue mem.W22.0
    @T_Y+24 write 0, s2e       ; 97..104
    repeat M-1, 1
.queue mem.W23.0
    @T_Y+23 write 0, s3e       ; 96..103
    repeat M-1, 1
