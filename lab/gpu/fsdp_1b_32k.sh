#!/usr/bin/env bash
# FSDP on 2 GPUs against 1 GPU with the same global batch, then a resume.
# The 1B recipe at 32K rows, both runs starting from the same random weights (saved as a HF checkpoint,
# which also exercises the streamed sharded load). Usage: lab/gpu/fsdp_1b_32k.sh OUT_DIR [steps]
set -euo pipefail
out=${1:?output dir}; steps=${2:-6}; half=$((steps / 2))
mkdir -p $out
python - "$out/init" <<'PY'
import sys, torch, yaml
from transformers import AutoConfig, AutoModelForCausalLM
cfg = yaml.safe_load(open("recipes/llama-1b/64k-anchor.yaml"))["model"]["config"]
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg)).save_pretrained(sys.argv[1])
PY
callbacks() {  # $1: trace dir, $2: checkpoint dir or empty
  echo "trainer:"; echo "  callbacks:"
  echo "    - {class_path: anchor_lightning.callbacks.trace.StepTrace, init_args: {directory: $1}}"
  if [ -n "${2:-}" ]; then
    echo "    - {class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {dirpath: $2, every_n_train_steps: $half, save_top_k: -1}}"
  fi
}
callbacks $out/one > $out/one.yaml
callbacks $out/two $out/ckpt > $out/two.yaml
callbacks $out/resumed > $out/resumed.yaml
common=(--config recipes/llama-1b/64k-anchor.yaml --seq_len=32768 --model.pretrained=$out/init
        --data.train=default:3000 --data.tokenizer=bytes --data.val_fraction=0 --data.global_batch_size=2
        --trainer.max_steps=$steps --trainer.log_every_n_steps=1 --trainer.limit_val_batches=0
        --trainer.enable_progress_bar=false --data.cache_dir=$out/cache)
python -m anchor_lightning fit "${common[@]}" --config $out/one.yaml --trainer.devices=1 \
  --trainer.enable_checkpointing=false --trainer.logger.init_args.save_dir=$out/tb-one
python -m anchor_lightning fit "${common[@]}" --config conf/strategy/fsdp.yaml --config $out/two.yaml \
  --trainer.devices=2 --trainer.logger.init_args.save_dir=$out/tb-two
python -m anchor_lightning fit "${common[@]}" --config conf/strategy/fsdp.yaml --config $out/resumed.yaml \
  --trainer.devices=2 --trainer.enable_checkpointing=false --trainer.logger.init_args.save_dir=$out/tb-resumed \
  --ckpt_path="$out/ckpt/epoch=0-step=$half.ckpt"
python scripts/summarize_run.py $out/tb-one --last 3
python scripts/summarize_run.py $out/tb-two --last 3
python scripts/compare_traces.py $out/one $out/two $out/resumed --rtol 0.01
