#!/usr/bin/env bash
# The GPU check in one command: both families trained on every visible GPU in bf16, DDP then FSDP (per block), each
# at a size that fills an 80 GB H100 by `python -m trimodal.model.sizes --memory --gpus 1 --batch B` (state plus
# measured activations, docs/model.md "Memory per GPU"):
#   trimodal `base` (460 M parameters) at 128 samples per GPU: 7.4 GB of state + 58.1 GB of activations
#   DeepSeek-VL `deepseek_vl_1.3b` (2.06 B) at 6 samples per GPU: 32.9 GB of state + 29.7 GB of activations
# -> benchmarks/results/gpu-<preset>.json (samples/s, MFU, peak memory; TRIMODAL_GPU_RESULTS names another
# folder). Extra arguments go to every
# benchmarks/gpu.py run, e.g. `bash benchmarks/gpu.sh --steps 100 --checkpointing`.
# Without a GPU it refuses, unless TRIMODAL_GPU_CHECK_ON_CPU=1 (a smoke run: both families' demo sizes, 2 gloo
# processes).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && . .venv/bin/activate
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
RUNS=("base 128" "deepseek_vl_1.3b 6")
SMOKE=()
if [ "$GPUS" -eq 0 ]; then
  if [ "${TRIMODAL_GPU_CHECK_ON_CPU:-0}" != 1 ]; then
    echo "gpu.sh: no CUDA GPU visible (set TRIMODAL_GPU_CHECK_ON_CPU=1 for a CPU smoke run)" >&2
    exit 2
  fi
  GPUS=2
  RUNS=("tiny 4" "deepseek_vl 2")
  SMOKE=(--steps 6 --records 96 --workers 0)
fi
WORK=$(mktemp -d -t trimodal-gpu-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
for run in "${RUNS[@]}"; do
  read -r preset batch <<<"$run"
  python -m torch.distributed.run --standalone --nproc_per_node="$GPUS" benchmarks/gpu.py --workdir "$WORK/$preset" \
    --preset "$preset" --batch-per-device "$batch" --out "${TRIMODAL_GPU_RESULTS:-benchmarks/results}/gpu-$preset.json" \
    "${SMOKE[@]}" "$@"
done
