#!/bin/bash
# One device call: this tree at the end of the twelfth session.
#  1. the compiled decode path against the full forward pass (decode_check.py);
#  2. this tree against the session's start (7dfdb1b in cmp_base/ttc_old, packaged as in
#     ab_inprocess.py) in one process, alternating, 2 rounds of S/4096 and M/1024;
#  3. issue 3's table: S at 4096 and 256 rows, M at 1024 and 256, HF generate beside.
source experiments/gpu/sampling_common.sh
echo "== decode check" | tee -a $LOG
timeout 90 python3 experiments/gpu/decode_check.py 2>&1 | grep -v Warn | tee -a $LOG
ab_old "against 7dfdb1b" 200
source experiments/gpu/table_round.sh
