#!/usr/bin/env bash
# The throughput matrix on one GPU (an H100 or H200). Usage: scripts/gpu_bench.sh OUT_DIR [part...]
# parts: 32k, 64k (exponential documents, pure bf16, ours and the peers), wikitext (64K, the shared
# corpus's lengths: anchor vs full step time), master (ours under fp32 master weights), context
# (longest trainable row, ours and the strongest peer), all. Each part writes OUT_DIR/<part>.json.
# KERNELS="fa4 torch" runs our varlen anchor contender once per FlashAttention kernel (default: auto).
set -euo pipefail
out=${1:?output dir}; shift; parts=${*:-all}; mkdir -p $out
data=${ANCHOR_SHARED_DATA:?set ANCHOR_SHARED_DATA to the folder holding wikitext2-valid.tokenized.jsonl}
run() { python -m anchor_lightning.bench --varlen-kernel ${KERNELS:-auto} "$@"; }
want() { [[ " $parts " == *" $1 "* || " $parts " == *" all "* ]]; }
if want 32k; then
  run --rows 32768 --contenders ours-anchor-varlen ours-anchor-flex ours-full-varlen hf-flex hf-flex-liger \
      --out $out/32k.json
fi
if want 64k; then
  run --rows 65536 --checkpoint-layers ${LAYERS:-6} --contenders ours-anchor-varlen ours-full-varlen hf-flex-liger \
      hf-sdpa-full-liger --out $out/64k.json
fi
if want wikitext; then
  run --rows 65536 --checkpoint-layers ${LAYERS:-6} --documents $data/wikitext2-valid.tokenized.jsonl \
      --contenders ours-anchor-varlen ours-full-varlen hf-flex-liger --out $out/wikitext.json
fi
if want master; then
  run --rows 32768 65536 --precision fp32-master --contenders ours-anchor-varlen ours-full-varlen --out $out/master.json
fi
if want context; then
  run --max-context --start 393216 --offload --mlp-tile 65536 --contenders ours-anchor-varlen --out $out/context-ours.json
  run --max-context --start 262144 --limit 524288 --contenders hf-flex-liger --out $out/context-peer.json
fi
