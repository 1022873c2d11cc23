#!/usr/bin/env bash
# The benchmark's row on two commits of the library, in one call on one card (issue: a redesign must
# leave the training step's speed within noise). The other commit's package travels in .carry/before
# (git archive COMMIT anchor_lightning conf recipes pyproject.toml | tar -x -C .carry/before), with the
# wheels the machine lacks in .whl. Runs before, after, before, after (ROWS, CONTENDERS as for
# python -m anchor_lightning.bench), each its own process, and writes $OUT/{before,after}-{1,2}.json.
#   carry .carry/before .whl:  bash lab/gpu/before_after.sh
set -uo pipefail
OUT=${OUT:?OUT: the folder whose files come back}
SITE=/tmp/site
ROWS=${ROWS:-32768}
CONTENDERS=${CONTENDERS:-ours-anchor-varlen}
[ -d "$SITE" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
HERE=$PWD
for round in 1 2; do
  for side in before after; do
    code=$HERE; [ "$side" = before ] && code=$HERE/.carry/before
    (cd "$code" && PYTHONPATH=$SITE:$code python3 -m anchor_lightning.bench --rows $ROWS --contenders $CONTENDERS \
      --out "$OUT/$side-$round.json" 2>&1 | grep --line-buffered -E "^ +ours|^ +hf|contender|error" ) 
    echo "$side round $round done"
  done
done
