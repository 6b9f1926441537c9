#!/usr/bin/env bash
# The GPU check in one command: the `small` preset trained on every visible GPU in bf16, DDP then FSDP, ->
# benchmarks/results/gpu.json (samples/s, MFU, peak memory). Extra arguments go to benchmarks/gpu.py, e.g.
#   bash benchmarks/gpu.sh --steps 100 --batch-per-device 64
# Without a GPU it refuses, unless TRIMODAL_GPU_CHECK_ON_CPU=1 (a smoke run: tiny preset, 2 gloo processes).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && . .venv/bin/activate
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
ARGS=()
if [ "$GPUS" -eq 0 ]; then
  if [ "${TRIMODAL_GPU_CHECK_ON_CPU:-0}" != 1 ]; then
    echo "gpu.sh: no CUDA GPU visible (set TRIMODAL_GPU_CHECK_ON_CPU=1 for a CPU smoke run)" >&2
    exit 2
  fi
  GPUS=2
  ARGS=(--preset tiny --steps 6 --batch-per-device 4 --records 96 --workers 0)
fi
WORK=$(mktemp -d -t trimodal-gpu-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
python -m torch.distributed.run --standalone --nproc_per_node="$GPUS" benchmarks/gpu.py --workdir "$WORK" \
  "${ARGS[@]}" "$@"
