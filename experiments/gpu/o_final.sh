#!/bin/bash
# One device call: the final tree (the o kernel with 64 x 64 blocks) against the previous
# commit in cmp_base/ttc_old in one process (ab_old), then issue 3's M/1024 and S/4096 rows
# with the defaults, each shape in its own process.
source experiments/gpu/sampling_common.sh
ab_old "A/B against the previous commit" 220
variants_round final 150 auto:1 "M 1024" "S 4096"
