#!/usr/bin/env bash
# The GPU checks of issue #15 on one GPU, in under 8 minutes: `bash bench/gpu_check.sh`.
#
# 1. bench/trainer.py --skip-accuracy --sync-check: training throughput per domain (device synchronised
#    before each clock reading, after a warm-up epoch) and the host-device waits of a training step and
#    an evaluation batch, counted by operation and by torch.cuda.set_sync_debug_mode (about 1 minute).
# 2. bench/gpu_packing.py --num-trials 8 --epochs 5: completed trials/hour at 1.0, 0.5 and 0.25 GPU per
#    trial, with per-process GPU memory from NVML if nvidia-ml-py is installed (about 3-5 minutes).
#
# Each step has a time limit, so the whole check ends within 8 minutes even if one step hangs. On a
# machine without a CUDA GPU it says so and exits 0. Paste its output into the README's benchmarks.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench/gpu_check.sh needs a CUDA GPU (none visible here); nothing measured."
    exit 0
fi

status=0
run() {
    local limit=$1
    shift
    echo "\$ $* (time limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$python" "$@"
    local code=$?
    if [ "$code" -ne 0 ]; then
        echo "-> exit $code$([ "$code" -eq 124 ] && echo ' (time limit reached)')"
        status=1
    fi
    echo
}

"$python" -c 'import torch; print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")'
run 140 bench/trainer.py --skip-accuracy --sync-check --epochs-timed 3
run 320 bench/gpu_packing.py --num-trials 8 --epochs 5
exit $status
