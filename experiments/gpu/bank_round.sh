#!/bin/bash
# One device call: the study's sampler-bound stage on the GPU with this tree's decode path
# (the Pallas attention and step kernels): `ttc run configs/arith_study.py --stages sample_bank`
# (pretrains xs, then draws its sample bank; over every GPU of the machine, mesh.data=-1),
# then, unless PARITY=0, greedy decoding of xs with each decode attention side by side
# (decode_parity.py; 'pallas' runs the step kernels, 'reduce' and 'einsum' XLA's fusions).
# The two-GPU call (results/h200x2_2026-11-29k/bank) ran PARITY=0 WAIT=330.
OUT=${OUT:-/tmp/out}
MODE=start WAIT=${WAIT:-420} OVERRIDES="--stages sample_bank" bash experiments/gpu/study_round.sh
[ "${PARITY:-1}" = 0 ] && exit 0
PYTHONPATH=/tmp/site:. timeout 150 python3 experiments/gpu/decode_parity.py \
  /tmp/study/runs/arith_study --batch 256 2>&1 | grep -v Warn | tee $OUT/parity.txt
