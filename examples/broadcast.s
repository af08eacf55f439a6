; broadcast.s: z[r] = x[r][0] in every lane, for 4 int8 vectors on the published chip.
;
; One lane to all 320 takes two SXM steps, as GroqAPI code does it: a distributor copies
; lane 0 of each superlane to its 16 lanes (a map of zeros), then the permuter's
; broadcast copies superlane 0 to the other 19. Both sit in the West SXM (position 3):
; the vectors and the map flow west to it, the results east to the output slice.
; tsp_v1 positions: MEM W slice s at 47 - s, so 44 - s positions east of the SXM.
; Latencies: mem_read 3, sxm_distribute 4, sxm_permute 24 (broadcast), mem_write 1.

.chip tsp_v1
.const ROWS 4
.const T 3+40                  ; 43: x (W4) and the map (W5) reach the SXM
.const T_B T+4                 ; 47: the distributed vectors are at the SXM
.const T_Z T_B+24+38           ; 109: the broadcast vectors reach W6, 38 positions east

.input  x   i8 [ROWS,320] hemi=W addr=0 slices=4
.input  map i8 [ROWS,320] hemi=W addr=0 slices=5
.output z   i8 [ROWS,320] hemi=W addr=0 slices=6

.queue mem.W4.0
    @T-3-40 read 0, s0w        ; 0: 40 positions east of the SXM
    repeat ROWS-1, 1
.queue mem.W5.0
    @T-3-39 read 0, s1w        ; 1: 39 positions east of the SXM
    repeat ROWS-1, 1
.queue sxm.W.dist0
    @T distribute i8, s0w, s1w, s2w   ; 43: lane j of each superlane = its lane map[j] = 0
    repeat ROWS-1, 1
.queue sxm.W.perm0
    @T_B broadcast i8, s2w, s3e       ; 47: superlane 0 to all; s3e at the SXM on 71
    repeat ROWS-1, 1
.queue mem.W6.0
    @T_Z write 0, s3e          ; 109
    repeat ROWS-1, 1
