#!/bin/bash
# One device call: the decode loop as one CUDA graph (command buffers with WHILE and
# CONDITIONAL: the loop condition is evaluated on the device, no host round trip per
# iteration) at 1, 2 and 4 steps per iteration, against the default (2 steps, a host round
# trip per iteration), each shape in one process with the default timed first and last.
source experiments/gpu/sampling_common.sh
V=auto:1,auto:1:xwhile,auto:1:s1:xwhile,auto:1:s4:xwhile,auto:1
variants_round loop 300 $V "M 1024" "S 4096"
