#!/bin/bash
# One device call: loads_probe.py (how the decode kernel's key and value loads are placed)
# with an XLA dump, then ptxas -v over every dumped PTX file that holds a Pallas kernel
# (registers per thread decide how many programs an SM runs at once).
source experiments/gpu/sampling_common.sh
rm -rf /tmp/pdump
echo "== loads probe" | tee -a $LOG
XLA_FLAGS="--xla_dump_to=/tmp/pdump" timeout 240 python3 experiments/gpu/loads_probe.py \
  2>&1 | grep -v Warn | tee -a $LOG
echo "== ptxas" | tee -a $LOG
PTXAS=$(command -v ptxas || find / -name ptxas -type f 2>/dev/null | head -1)
ls /tmp/pdump | grep -v -E "pbtxt$|txt$" | head -20 >> $OUT/dump_other.txt
for f in $(grep -l -E "\.entry.*(probe_|decode_attention)" -r /tmp/pdump 2>/dev/null | head -12); do
  echo "-- $f" | tee -a $LOG
  "$PTXAS" -v -arch=sm_90a "$f" -o /dev/null 2>&1 | grep -A1 -E "Compiling entry.*(probe_|decode_attention)" \
    | grep -E "Compiling|Used" | tee -a $LOG
done
