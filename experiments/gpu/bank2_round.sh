#!/bin/bash
# One device call on nvidia-h200-x2: the study's sample_bank stage with rows over both GPUs
# (mesh.data=-1, the default), as bank_round.sh did on one GPU.
MODE=start WAIT=${WAIT:-330} OVERRIDES="--stages sample_bank" bash experiments/gpu/study_round.sh
