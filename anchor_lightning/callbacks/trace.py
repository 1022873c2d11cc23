"""A per-step record of what was trained: optimizer step, the rows each rank read (and their hash),
the step's loss over all ranks.

Writes ``trace-rank<r>.jsonl`` into ``directory``; used to show that a resumed run reads the same rows
and reaches the same losses as an uninterrupted one. Reading the loss costs a device sync per step:
keep it off for speed runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L

from anchor_lightning.model.step_stats import ends_step, step_stats


def rows_hash(rows: list[int]) -> str:
    return hashlib.sha1(",".join(map(str, rows)).encode()).hexdigest()[:12]


class StepTrace(L.Callback):
    def __init__(self, directory: str = "runs/trace") -> None:
        self.directory = Path(directory)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not ends_step(trainer, batch_idx):
            return
        step = pl_module.global_step - 1
        stats = step_stats(pl_module)
        rows, loss = stats.rows.get(step, []), stats.last.loss
        assert loss is not None, "a finished step always holds its loss"
        if trainer.world_size > 1:  # the reduction is in place: never on the module's own tensor
            loss = trainer.strategy.reduce(loss.clone(), reduce_op="sum")
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {"step": step, "hash": rows_hash(rows), "rows": rows, "loss": float(loss)}
        with open(self.directory / f"trace-rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
