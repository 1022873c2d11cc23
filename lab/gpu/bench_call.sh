#!/usr/bin/env bash
# The throughput matrix (lab/gpu/bench.sh) on the lent GPU machine (nvidia-h200), in calls of at most
# 10 minutes: it runs in the background across calls (lab/gpu/background.sh) and each call brings back
# the parts' JSON written so far.
#
# Prepare here (all git-ignored):
#   .whl/                 liger-kernel (../shared/tools/gpu-wheels)
#   .fa4/part1, part2     flash-attn-4 in two pieces (../shared/tools/gpu-fa4), optional: without them our
#                         varlen contender runs PyTorch's FlashAttention-2 kernel only
#   .carry/bench/         wikitext2-valid.tokenized.jsonl (the `wikitext` part's documents)
# Call 1 (carry .fa4/part1), only with flash-attn-4:  bash lab/gpu/bench_call.sh piece
# Call 2 (carry .whl .carry/bench, and .fa4/part2), within 30 s of call 1:
#                                                     bash lab/gpu/bench_call.sh start [PART...]
# Later calls (nothing carried), each within 30 s:    bash lab/gpu/bench_call.sh watch
# PART: bench.sh's parts (32k 64k wikitext master context context-ours context-peer; default all).
# With flash-attn-4 our varlen contender runs once per kernel (KERNELS="fa4 torch"). Exit codes as
# lab/gpu/background.sh's.
set -uo pipefail
START=$SECONDS
WORK=$(realpath -m "${WORK:-/tmp/bench}")
SITE=${SITE:-/tmp/site}
FA4=${FA4:-.fa4}
FA4_SITE=/tmp/fa4site
WHEELS=${WHEELS:-.whl}
CARRY=${CARRY:-.carry}
BENCH=${BENCH:-lab/gpu/bench.sh}  # relative to the run's copy of the code; tests put a stand-in here
OUT=${OUT:?OUT: the folder whose files come back}
HERE=$(dirname "$0")

case "${1:-}" in
  piece)
    [ -f "$FA4/part1/cu13.part.aa" ] || { echo "carry .fa4/part1 (../shared/tools/gpu-fa4 makes it)"; exit 6; }
    cp "$FA4/part1/cu13.part.aa" /tmp/ && ls -l /tmp/cu13.part.aa
    ;;
  start)
    shift
    if [ -f "$WORK/run.pid" ]; then
      echo "the matrix was started on this machine before: watching it"
      exec bash "$HERE/background.sh" watch "$WORK"
    fi
    if [ -d "$WHEELS" ] && [ ! -d "$SITE" ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl || exit 1
    fi
    kernels=auto
    if [ -d "$FA4/part2" ]; then
      [ -f /tmp/cu13.part.aa ] || { echo "flash-attn-4's first piece is not here: make call 1 (piece) and call 2 again"; exit 4; }
      bash "$FA4/part2/install.sh" || exit 5
      SITE=$SITE:$FA4_SITE:$FA4_SITE/nvidia_cutlass_dsl/dsl_packages
      kernels="fa4 torch"
    fi
    [ -f "$CARRY/bench/wikitext2-valid.tokenized.jsonl" ] || { echo "carry .carry/bench (the wikitext part's documents)"; exit 6; }
    mkdir -p "$WORK/data" && cp "$CARRY/bench/wikitext2-valid.tokenized.jsonl" "$WORK/data/"
    echo "varlen kernels: $kernels; parts: ${*:-all}"
    export SITE WATCH=$((${WATCH:-570} - (SECONDS - START)))  # the call's watching includes the set-up
    exec bash "$HERE/background.sh" start "$WORK" -- \
      env KERNELS="$kernels" ANCHOR_SHARED_DATA="$WORK/data" bash "$BENCH" "$WORK/out" "$@"
    ;;
  watch)
    [ -f "$WORK/run.pid" ] || { echo "no matrix on this machine (a bare machine?): make call 2 (and 1) again"; exit 4; }
    exec bash "$HERE/background.sh" watch "$WORK"
    ;;
  *)
    echo "usage: bench_call.sh piece | start [PART...] | watch"; exit 2
    ;;
esac
