#!/usr/bin/env bash
# Issue 4's matrix on one GPU (name nvidia-h100-x1). Usage: scripts/gpu_bench.sh OUT_DIR [part]
# part: peers (32K/64K, exponential documents, pure bf16), wikitext (64K, the shared corpus's lengths),
# master (ours under fp32 master weights), context (longest trainable row), or all.
set -euo pipefail
out=${1:?output dir}; part=${2:-all}; mkdir -p $out
run() { python -m anchor_lightning.bench "$@"; }
if [[ $part == peers || $part == all ]]; then
  run --rows 32768 65536 --contenders ours-anchor-varlen ours-anchor-flex ours-full-varlen hf-flex hf-flex-liger \
      hf-sdpa-full-liger --out $out/peers.json
fi
if [[ $part == wikitext || $part == all ]]; then
  run --rows 65536 --documents .gpu/data/wikitext2-valid.tokenized.jsonl \
      --contenders ours-anchor-varlen ours-full-varlen hf-flex-liger --out $out/wikitext.json
fi
if [[ $part == master || $part == all ]]; then
  run --rows 32768 65536 --precision fp32-master --contenders ours-anchor-varlen ours-full-varlen --out $out/master.json
fi
if [[ $part == context || $part == all ]]; then
  run --max-context --contenders ours-anchor-varlen hf-flex-liger --out $out/context.json
fi
