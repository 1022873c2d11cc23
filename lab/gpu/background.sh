#!/usr/bin/env bash
# A long GPU job across several calls of at most 10 minutes to the lent GPU machine, which stays warm
# (keeping /tmp and running processes) for 30 s after each call.
#
#   bash lab/gpu/background.sh start WORK -- COMMAND [ARG...]   start COMMAND in the background, then watch
#   bash lab/gpu/background.sh watch WORK                       watch it again (the next call, within 30 s)
#
# COMMAND runs in its own process session (so the end of a call does not stop it), with a copy of this
# repository's code (anchor_lightning, scripts, lab, recipes; or the paths $CODE lists) in WORK/code as
# its working directory and on PYTHONPATH, after $SITE (colon-separated folders where wheels were
# installed; default /tmp/site): the next calls replace the working tree under it. Its output goes to
# WORK/run.log (appended to: a run started again keeps what it logged before). COMMAND writes what
# should come back into WORK/out (at most 7 files, 16 MiB each).
#
# Watching prints what the run logged since the last call, copies WORK/out's files and run.log into
# $OUT whenever they change (so a call that is stopped still brings back the latest), and returns when
# the run ends or after WATCH seconds (default 570). Exit codes: COMMAND's own once it ended, 10 while
# it is still running (call watch again within 30 s), 4 when no run was started on this machine. `start`
# where a run was started before only watches it.
set -uo pipefail
START=$SECONDS
WATCH=${WATCH:-570}
SITE=${SITE:-/tmp/site}
OUT=${OUT:?OUT: the folder whose files come back}
CODE=${CODE:-anchor_lightning scripts lab recipes}  # what the copy of the code holds (the GPU tests add tests pyproject.toml)
export PYTHONUNBUFFERED=1

usage() { echo "usage: background.sh start WORK -- COMMAND [ARG...] | background.sh watch WORK"; exit 2; }
[ $# -ge 2 ] || usage
VERB=$1 WORK=$2
shift 2
LOG=$WORK/run.log

running() { [ -f "$WORK/run.pid" ] && kill -0 "$(cat "$WORK/run.pid")" 2>/dev/null && [ ! -f "$WORK/run.exit" ]; }

launch() {
  local code=$WORK/code site=${SITE:+$SITE:}
  mkdir -p "$WORK/out" && rm -rf "$code.tmp" && mkdir -p "$code.tmp"
  # shellcheck disable=SC2086  # CODE: a list of paths
  cp -r $CODE "$code.tmp"/ && rm -rf "$code" && mv "$code.tmp" "$code"
  rm -f "$WORK/run.pid" "$WORK/run.exit"
  # the log of a run started again (after a failure, or restored by keep.py) goes on: nothing logged is lost,
  # and watching shows only what this launch adds
  stat -c %s "$LOG" > "$WORK/log.offset" 2>/dev/null || echo 0 > "$WORK/log.offset"
  # the run's own shell writes its pid (setsid may fork, so $! need not be the run); exec: no shell of this
  # call stays behind holding the call's output open (a caller reading it through a pipe would wait for the run)
  (cd "$code" && PYTHONPATH="$site$code" exec setsid nohup bash -c \
    'echo $$ > "$0/run.pid"; "$@"; echo $? > "$0/run.exit"' "$WORK" "$@" >> "$LOG" 2>&1 < /dev/null &)
  for _ in $(seq 100); do [ -s "$WORK/run.pid" ] && break; sleep 0.1; done
  echo "started in the background (pid $(cat "$WORK/run.pid")): $*"
}

copy_back() {
  local f
  for f in "$WORK"/out/*; do [ -f "$f" ] && case $f in *.tmp) ;; *) cp "$f" "$OUT/" ;; esac; done
  [ -f "$LOG" ] && cp "$LOG" "$OUT/run.log"
}

show_new() {  # what the run logged since the last call showed, once
  local offset size
  offset=$(cat "$WORK/log.offset" 2>/dev/null || echo 0)
  size=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
  if [ "$size" -gt "$offset" ]; then
    tail -c +$((offset + 1)) "$LOG" | head -c $((size - offset))
    echo "$size" > "$WORK/log.offset"
  fi
}

watch() {
  local last="" stamp code
  while :; do
    show_new
    stamp=$(stat -c %Y "$WORK"/out/* 2>/dev/null | sort | tail -1)
    if [ -n "$stamp" ] && [ "$stamp" != "$last" ]; then copy_back; last=$stamp; fi
    running || break
    [ $((SECONDS - START)) -ge "$WATCH" ] && break
    sleep 2
  done
  show_new
  copy_back
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
  if running; then
    echo "[watch] the run goes on after $((SECONDS - START)) s of this call: call watch again within 30 s"
    exit 10
  fi
  code=$(cat "$WORK/run.exit" 2>/dev/null || echo 1)
  echo "[watch] the run ended with exit code $code"
  exit "$code"
}

case $VERB in
  start)
    [ "${1:-}" = -- ] && [ $# -ge 2 ] || usage
    shift
    mkdir -p "$WORK"
    if running || [ -f "$WORK/run.exit" ]; then
      echo "a run was started here before: watching it"
    else
      launch "$@"
    fi
    watch
    ;;
  watch)
    [ -f "$WORK/run.pid" ] || { echo "no run on this machine (a bare machine?): start it again"; exit 4; }
    watch
    ;;
  *) usage ;;
esac
