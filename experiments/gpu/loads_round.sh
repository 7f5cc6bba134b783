#!/bin/bash
# One device call: loads_probe.py (how the decode kernel's key and value loads are placed).
# (The logged call also dumped XLA's output to run ptxas over the kernels' PTX; the dump held
# no PTX with them, so that step printed nothing and is gone.)
source experiments/gpu/sampling_common.sh
echo "== loads probe" | tee -a $LOG
timeout 240 python3 experiments/gpu/loads_probe.py 2>&1 | grep -v Warn | tee -a $LOG
