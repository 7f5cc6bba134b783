#!/bin/bash
# Device call: XLA fusion options that might fold the decode layer's elementwise kernels into
# its GEMMs (Triton fusions without a hero op, the fusion autotuner), S/4096 and M/1024,
# variants side by side in one process per shape, the default first and last for the spread.
# (The logged call also asked for the generic Triton emitter, an option jaxlib 0.11.2 lacks.)
source experiments/gpu/sampling_common.sh
V=auto:1,auto:1:xhero,auto:1:xfauto,auto:1
variants_round bench 100 $V "S 4096" "M 1024"
