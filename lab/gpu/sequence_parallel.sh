#!/usr/bin/env bash
# Sequence parallelism on 2 GPUs (name nvidia-h100-x2): Ulysses sequence parallelism against one GPU, 1B shape.
# Usage: lab/gpu/sequence_parallel.sh OUT_DIR [part...]   parts: check speed context cli (default: all)
#   check:   loss and gradients of one 64K row, split over 2 GPUs vs computed on one (bf16 autocast)
#   speed:   tokens/s per GPU at the same row length, 1 GPU vs 2 GPUs sharing each row
#   context: longest trainable row, 1 GPU vs 2 GPUs, the same settings (FSDP, checkpointing every layer)
#   cli:     the user's path: the 1B recipe at 128K through the CLI with conf/strategy/fsdp-sequence-parallel.yaml
#            on 2 GPUs against conf/strategy/fsdp.yaml on 1 GPU, same initial weights and rows, 4 steps
set -euo pipefail
out=${1:?output dir}; shift; parts=${*:-check speed context cli}; mkdir -p $out
D="python -m anchor_lightning.bench.distributed --timeout ${TIMEOUT:-300}"
want() { [[ " $parts " == *" $1 "* ]]; }
if want check; then
  $D --gpus 2 --sp 2 --check --rows 65536 --out $out/check.json | tail -1 | python -c "
import json, sys; r = json.loads(sys.stdin.read())
print({k: r.get(k) for k in ('loss_one_gpu', 'loss_split', 'loss_rel_diff', 'grad_cosine', 'grad_rel_norm_diff', 'error')})"
fi
if want speed; then
  $D --gpus 1 --sp 1 --rows 131072 --out $out/speed-one.json | tail -2
  $D --gpus 2 --sp 2 --rows 131072 --out $out/speed-two.json | tail -2
fi
if want context; then
  $D --gpus 1 --sp 1 --max-context --start 262144 --out $out/context-one.json | grep -v '^{'
  $D --gpus 2 --sp 2 --max-context --start 524288 --out $out/context-two.json | grep -v '^{'
fi
if want cli; then
  python - "$out/init" <<'PY'
import sys, torch, yaml
from transformers import AutoConfig, AutoModelForCausalLM
cfg = yaml.safe_load(open("recipes/llama-1b/64k-anchor.yaml"))["model"]["config"]
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg)).save_pretrained(sys.argv[1])
PY
  common=(--config recipes/llama-1b/64k-anchor.yaml --seq_len=131072 --model.pretrained=$out/init
          --data.train=default:3000 --data.tokenizer=bytes --data.val_fraction=0 --data.global_batch_size=1
          --trainer.max_steps=4 --trainer.log_every_n_steps=1 --trainer.limit_val_batches=0
          --trainer.enable_progress_bar=false --trainer.enable_checkpointing=false --data.cache_dir=$out/cache)
  for run in one two; do
    printf 'trainer:\n  callbacks:\n    - {class_path: anchor_lightning.callbacks.trace.StepTrace, init_args: {directory: %s}}\n' \
      $out/trace-$run > $out/$run.yaml
  done
  python -m anchor_lightning fit "${common[@]}" --config conf/strategy/fsdp.yaml --config $out/one.yaml \
    --trainer.devices=1 --trainer.logger.init_args.save_dir=$out/tb-one
  python -m anchor_lightning fit "${common[@]}" --config conf/strategy/fsdp-sequence-parallel.yaml --config $out/two.yaml \
    --trainer.devices=2 --trainer.logger.init_args.save_dir=$out/tb-two
  python scripts/summarize_run.py $out/tb-one --last 2
  python scripts/summarize_run.py $out/tb-two --last 2
  python scripts/compare_traces.py $out/trace-one $out/trace-two --rtol 0.01
fi
