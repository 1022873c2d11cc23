#!/usr/bin/env bash
# The throughput matrix on one GPU (an H100 or H200). Usage: lab/gpu/bench.sh OUT_DIR [part...]
# parts, run in the order given: 32k, 64k (exponential documents, pure bf16, ours and the peers),
# wikitext (64K, the shared corpus's lengths: anchor vs full step time), master (ours under fp32 master
# weights), context (longest trainable row: context-ours, then context-peer, the strongest peer; both
# probe up to the bench's default limit), fp8 and fp8-3b (FP8 linear layers, ours and the peer, 1B and 3B
# shapes), compiled (ours with model.compile_layers against ours eager), all (32k 64k wikitext master
# context). Each part writes
# OUT_DIR/<part>.json (context: context-ours.json and context-peer.json).
# KERNELS="fa4 torch" runs our varlen anchor contender once per FlashAttention kernel (default: auto).
set -euo pipefail
out=${1:?output dir}; shift; parts=${*:-all}; mkdir -p $out
data=${ANCHOR_SHARED_DATA:?set ANCHOR_SHARED_DATA to the folder holding wikitext2-valid.tokenized.jsonl}
run() { python -m anchor_lightning.bench --varlen-kernel ${KERNELS:-auto} "$@"; }
part() {
  case $1 in
    32k)
      run --rows 32768 --contenders ours-anchor-varlen ours-anchor-flex ours-full-varlen hf-flex hf-flex-liger \
          --out $out/32k.json ;;
    64k)
      run --rows 65536 --checkpoint-layers ${LAYERS:-6} --contenders ours-anchor-varlen ours-full-varlen \
          hf-flex-liger hf-sdpa-full-liger --out $out/64k.json ;;
    wikitext)
      run --rows 65536 --checkpoint-layers ${LAYERS:-6} --documents $data/wikitext2-valid.tokenized.jsonl \
          --contenders ours-anchor-varlen ours-full-varlen hf-flex-liger --out $out/wikitext.json ;;
    master)
      run --rows 32768 65536 --precision fp32-master --contenders ours-anchor-varlen ours-full-varlen \
          --out $out/master.json ;;
    context-ours)
      run --max-context --start 393216 --offload --mlp-tile 65536 --contenders ours-anchor-varlen \
          --out $out/context-ours.json ;;
    context-peer)
      run --max-context --start 262144 --contenders hf-flex-liger --out $out/context-peer.json ;;
    context)
      part context-ours; part context-peer ;;
    fp8)  # FP8 linear layers (compiled, torchao), ours and the strongest peer, against their own bf16
      run --rows 32768 65536 --float8 none tensorwise rowwise --contenders ours-anchor-varlen hf-flex-liger \
          --out $out/fp8.json ;;
    compiled)  # ours with each decoder layer compiled (model.compile_layers) against ours eager, same card;
      # then compiled without Liger's RoPE/SwiGLU/RMSNorm (Liger 0.8.5 calls RoPE and SwiGLU through a
      # torch.compiler.disable'd dispatch, which cuts each compiled layer): inductor fuses them itself
      run --rows 32768 65536 --contenders ours-anchor-varlen --out $out/eager.json
      run --rows 32768 65536 --contenders ours-anchor-varlen --compile-layers --out $out/compiled.json
      run --rows 32768 65536 --contenders ours-anchor-varlen --compile-layers --kernels none \
          --out $out/compiled-inductor.json ;;
    fp8-3b)  # the same on Llama-3.2-3B's decoder shape (vocabulary 32,000 as the 1B's) at 32K, where FP8 gains most
      run --rows 32768 --float8 none tensorwise rowwise --contenders ours-anchor-varlen hf-flex-liger \
          --shape '{"hidden_size": 3072, "intermediate_size": 8192, "layers": 28, "heads": 24, "kv_heads": 8}' \
          --out $out/fp8-3b.json ;;
    all)
      for p in 32k 64k wikitext master context; do part $p; done ;;
    *)
      echo "unknown part: $1 (32k 64k wikitext master context context-ours context-peer fp8 fp8-3b compiled all)" >&2; exit 2 ;;
  esac
}
for p in $parts; do part $p; done
