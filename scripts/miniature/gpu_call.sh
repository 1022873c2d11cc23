#!/usr/bin/env bash
# One GPU call of the miniature on the lent GPU machine (nvidia-h200): set up once per machine what a bare
# one lacks, then continue scripts/miniature/run.py until DEADLINE seconds after this script started.
#
# The machine has no registry and takes at most 64 MiB per call, so prepare here (all git-ignored):
#   .whl/              wheels of what it lacks: datasets, dill, multiprocess, jsonargparse, docstring-parser,
#                      typeshed-client, importlib-resources, liger-kernel, gguf (pip download --python-version 3.12)
#   .carry/smollm2/1/  the first 60 MB of SmolLM2-135M-Instruct.Q4_1.gguf (split -b 60000000), as smollm2.part.00
#   .carry/smollm2/2/  the rest (smollm2.part.01) and the whole file's sha256
#   .carry/minidata/   scripts/miniature/prepare_data.py's split, each .jsonl compressed with xz, and manifest.json
# Call 1 (carry .carry/smollm2/1):            bash scripts/miniature/gpu_call.sh piece
# Call 2 (carry .carry/smollm2/2, .carry/minidata, .whl), within the 30 s the machine stays warm:
#                                             bash scripts/miniature/gpu_call.sh
# Later calls (nothing carried, same warm machine): the same command; it resumes where the last one stopped.
set -uo pipefail
START=$SECONDS
DEADLINE=${DEADLINE:-545}
WORK=${WORK:-/tmp/miniature}
GGUF=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONUNBUFFERED=1

if [ "${1:-}" = piece ]; then
  cp .carry/smollm2/1/smollm2.part.* /tmp/ && ls -l /tmp/smollm2.part.* && nvidia-smi --query-gpu=name,memory.total --format=csv
  exit
fi
if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
if [ ! -f "$GGUF" ]; then
  if [ ! -f /tmp/smollm2.part.00 ] || [ ! -d .carry/smollm2/2 ]; then
    echo "a bare machine: make call 1 (piece) and call 2 again"; exit 4
  fi
  cat /tmp/smollm2.part.* .carry/smollm2/2/smollm2.part.* > "$GGUF.tmp" && mv "$GGUF.tmp" "$GGUF"
  [ "$(sha256sum "$GGUF" | cut -c1-64)" = "$(cat .carry/smollm2/2/sha256)" ] || { echo "GGUF checksum mismatch"; rm -f "$GGUF"; exit 5; }
fi
if [ ! -f /tmp/minidata/manifest.json ]; then
  mkdir -p /tmp/minidata.tmp && for f in .carry/minidata/*.xz; do
    xz -dc "$f" > "/tmp/minidata.tmp/$(basename "$f" .xz)" || exit 6
  done
  cp .carry/minidata/manifest.json /tmp/minidata.tmp/ && mv /tmp/minidata.tmp /tmp/minidata
fi
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
python3 scripts/miniature/run.py --gguf "$GGUF" --data /tmp/minidata --work "$WORK" --out "$OUT" \
  --deadline $((DEADLINE - (SECONDS - START)))
