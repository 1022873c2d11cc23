#!/usr/bin/env bash
# The RoPE precision diagnostic on a 1B Llama-shaped model: random init, then after a few
# hundred steps of our training (no pretrained weights here), at 4K-16K. Usage: lab/gpu/diagnose_1b.sh OUT [steps]
set -euo pipefail
out=${1:?output dir}; steps=${2:-300}
diag=(--data default:3000 --lengths 4096 8192 16384 --offset-length 4096 --sequences 2 --rope-theta 10000 --no-progress)
python -m anchor_lightning diagnose --model recipes/llama-1b/64k-anchor.yaml "${diag[@]}" --out $out/random
cat > $out.ckpt.yaml <<YAML
trainer:
  callbacks:
    - {class_path: lightning.pytorch.callbacks.ModelCheckpoint, init_args: {dirpath: $out/ckpt, save_last: true, save_weights_only: true}}
YAML
python -m anchor_lightning fit --config recipes/llama-1b/64k-anchor.yaml --config $out.ckpt.yaml --seq_len=4096 \
  --model.rope_theta=10000 --model.activation_checkpointing=false --model.optimizer.init_args.lr=0.0005 \
  --model.warmup_steps=30 --data.train=default:3000 --data.tokenizer=bytes --data.val_fraction=0 \
  --data.micro_batch_size=4 --data.global_batch_size=4 --trainer.max_steps=$steps --trainer.log_every_n_steps=50 \
  --trainer.limit_val_batches=0 --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir=$out/tb \
  --data.cache_dir=$out/cache --trainer.enable_checkpointing=true
python scripts/summarize_run.py $out/tb --tags train/loss perf/tokens_per_sec --last 1
python -m anchor_lightning export --ckpt $out/ckpt/last.ckpt --out $out/trained-hf
python -m anchor_lightning diagnose --model $out/trained-hf "${diag[@]}" --out $out/trained
