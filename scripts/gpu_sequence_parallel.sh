#!/usr/bin/env bash
# Issue 6 on 2 GPUs (name nvidia-h100-x2): Ulysses sequence parallelism against one GPU, 1B shape.
# Usage: scripts/gpu_sequence_parallel.sh OUT_DIR [part...]   parts: check speed context (default: all)
#   check:   loss and gradients of one 64K row, split over 2 GPUs vs computed on one (bf16 autocast)
#   speed:   tokens/s per GPU at the same row length, 1 GPU vs 2 GPUs sharing each row
#   context: longest trainable row, 1 GPU vs 2 GPUs, the same settings (FSDP, checkpointing every layer)
set -euo pipefail
out=${1:?output dir}; shift; parts=${*:-check speed context}; mkdir -p $out
D="python -m anchor_lightning.bench.distributed --timeout ${TIMEOUT:-300}"
want() { [[ " $parts " == *" $1 "* ]]; }
if want check; then
  $D --gpus 2 --sp 2 --check --rows 65536 --out $out/check.json | tail -1 | python -c "
import json, sys; r = json.loads(sys.stdin.read())
print({k: r.get(k) for k in ('loss_one_gpu', 'loss_split', 'loss_rel_diff', 'grad_cosine', 'grad_rel_norm_diff', 'error')})"
fi
if want speed; then
  $D --gpus 1 --sp 1 --rows 131072 --out $out/speed-one.json | tail -2
  $D --gpus 2 --sp 2 --rows 131072 --out $out/speed-two.json | tail -2
fi
if want context; then
  $D --gpus 1 --sp 1 --max-context --start 262144 --out $out/context-one.json | grep -v '^{'
  $D --gpus 2 --sp 2 --max-context --start 524288 --out $out/context-two.json | grep -v '^{'
fi
