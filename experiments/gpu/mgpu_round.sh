#!/bin/bash
# One device call: mgpu_gemm_probe.py (the decode step's GEMMs, XLA against JAX's Mosaic GPU
# Hopper matmul at several tilings).
source experiments/gpu/sampling_common.sh
echo "== mgpu gemm probe" | tee -a $LOG
timeout 420 python3 experiments/gpu/mgpu_gemm_probe.py 2>&1 | grep -v Warn | tee -a $LOG
