#!/usr/bin/env bash
# 8 GPUs: a LLaMA-2-7B-shaped Llama (random init) at 64K and 128K rows, anchor (varlen) and full
# attention, FSDP2 over every GPU of the machine, activation checkpointing on every layer, Ulysses
# sequence parallelism in groups of 2 at 128K. Prints tokens/s (per GPU), MFU, peak memory per GPU and
# step time, and the anchor/full step-time ratio at each row length.
# Usage: lab/gpu/scale_8gpu.sh OUT_DIR [--dry-run]       (meant for nvidia-h100-x8)
#   --dry-run: the same runs with 2 decoder layers and one timed step on whatever GPUs are present
#              (checks the wiring and the memory plan on 2 GPUs; its numbers are not the 7B's)
set -euo pipefail
out=${1:?output dir}; mkdir -p $out
gpus=${GPUS:-$(nvidia-smi -L | wc -l)}
extra=()
if [[ ${2:-} == --dry-run ]]; then extra=(--layers 2 --warmup 1 --steps 1); fi
D="python -m anchor_lightning.bench.distributed --preset llama2-7b --gpus $gpus --modes anchor full --timeout ${TIMEOUT:-900}"
$D --rows 65536 --sp 1 "${extra[@]}" --out $out/7b-64k.json | grep -v '^{'
$D --rows 131072 --sp 2 "${extra[@]}" --out $out/7b-128k.json | grep -v '^{'
