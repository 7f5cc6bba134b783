#!/bin/bash
# Device call: settings around the new defaults (one-block kernel, concurrent command
# buffers), one process per shape, the default first and last: the one-block kernel with
# 1 or 3 stages and 8 warps, 4 decode steps per loop iteration, cuBLAS for every matmul, and
# the whole decode loop in one CUDA graph.
source experiments/gpu/sampling_common.sh
V=auto:1,auto:1:k128x4x1,auto:1:k128x4x3,auto:1:k128x8x2,auto:1:s4,auto:1:xcublas,auto:1:xwhile,auto:1
variants_round tune 240 $V "M 1024" "S 4096"
