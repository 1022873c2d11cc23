"""Save and stop cleanly on SIGTERM / SIGUSR1 / SIGINT (preemption, SLURM's warning signal, ``kill``,
Ctrl-C; a second Ctrl-C stops at once).

Lightning 2.6 saves nothing on SIGTERM by itself. The handler only sets a flag; at the end of the
optimizer step in progress the run writes ``last.ckpt`` (atomically) and stops, so ``fit --ckpt_path
last`` resumes after that step with the exact data position. With several ranks the flag is agreed
on by all of them at each step end (a tiny collective), so every rank saves and stops together.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from anchor_lightning.callbacks.parts import trainer_callbacks
from anchor_lightning.messages import say
from anchor_lightning.model.step_stats import ends_step


class SaveOnSignal(L.Callback):
    def __init__(self, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1", "SIGINT")) -> None:
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, Any] = {}  # what signal.signal returned

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, without a checkpoint
        self.received = signum
        if signum == signal.SIGINT:
            say("Ctrl-C: saving last.ckpt after the step in progress (Ctrl-C again to stop at once)")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None
        for name in self.signals:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handle)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not ends_step(trainer, batch_idx):
            return
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        path = last_checkpoint_path(trainer)
        say(f"signal received: saving {path} after step {trainer.global_step} and stopping")
        for callback in trainer_callbacks(trainer):
            if isinstance(callback, ModelCheckpoint) and callback.save_last:
                # its own last.ckpt from now on: a save of its own at this step rewrites the file instead of
                # writing last-v1.ckpt beside one it did not write (set before saving: it is in the state)
                callback.last_model_path = path
        trainer.save_checkpoint(path)
        trainer.should_stop = True


def last_checkpoint_path(trainer: L.Trainer) -> str:
    """``last.ckpt`` in the ModelCheckpoint's directory (where ``--ckpt_path last`` looks)."""
    callback = next((c for c in trainer_callbacks(trainer) if isinstance(c, ModelCheckpoint)), None)
    directory = (
        callback.dirpath
        if callback is not None and callback.dirpath
        else Path(trainer.default_root_dir) / "checkpoints"
    )
    return str(Path(directory) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}")
