#!/bin/bash
# Device call: where a decode step's time goes with the current defaults (one-block kernel,
# concurrent command buffers): S/4096 and M/1024, each traced (the profiler runs the kernels
# without command buffers, so traced steps are a little longer than timed ones).
source experiments/gpu/sampling_common.sh
bench_SM auto:1
trace_summaries 16
