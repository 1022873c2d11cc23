#!/usr/bin/env bash
# The 1B recipe at 64K on one GPU: full forward+backward+AdamW steps, fp32 master weights,
# anchor/varlen and full attention; prints tokens/s, MFU and peak memory from each run's TensorBoard.
# Usage: lab/gpu/recipe_1b_64k.sh OUT_DIR [steps]
set -euo pipefail
out=${1:?output dir}; steps=${2:-8}
for mode in anchor full; do
  python -m anchor_lightning fit --config recipes/llama-1b/64k-$mode.yaml \
    --data.train=default:3000 --data.tokenizer=bytes --data.val_fraction=0 --data.global_batch_size=1 \
    --trainer.max_steps=$steps --trainer.log_every_n_steps=1 --trainer.limit_val_batches=0 \
    --trainer.enable_checkpointing=false --trainer.callbacks=null --trainer.enable_progress_bar=false \
    --trainer.logger.init_args.save_dir=$out --data.cache_dir=$out/cache
  python scripts/summarize_run.py $out/llama-1b-64k-$mode --last 4
done
