"""A progress bar that counts micro-batches against the right total.

Lightning caps an epoch's bar at ``max_steps - global_step`` batches, but with gradient accumulation a
step is several batches (a run of 80 steps then shows "160/80"), and it prints the epoch as "0/-2"
when only ``max_steps`` is set. This bar fixes both and otherwise is Lightning's (Rich when installed).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

if _RICH_AVAILABLE:
    from lightning.pytorch.callbacks import RichProgressBar as _Base
else:  # pragma: no cover - rich ships with the pinned requirements
    _Base = TQDMProgressBar


class StepProgressBar(_Base):
    @property
    def total_train_batches(self):
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            remaining = (trainer.max_steps - trainer.global_step) * trainer.accumulate_grad_batches
            return min(trainer.num_training_batches, remaining)
        return trainer.num_training_batches

    def _get_train_description(self, current_epoch: int) -> str:
        epochs = self.trainer.max_epochs
        description = f"Epoch {current_epoch}" + (f"/{epochs - 1}" if epochs is not None and epochs > 0 else "")
        return f"{description:{len(self.validation_description)}}"
