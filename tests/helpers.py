"""Test-only callbacks that interrupt or poison a run at a chosen optimizer step."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class SignalAtStep(L.Callback):
    """Send ``signum`` to this process in the middle of optimizer step ``step`` (before its forward)."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM)) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and batch_idx % trainer.accumulate_grad_batches == 0:
            os.kill(os.getpid(), self.signum)


class KillDuringSave(L.Callback):
    """SIGKILL this process half-way through writing the checkpoint of optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step != self.step:
            return
        real_save = torch.save

        def half_then_die(obj, f, *args, **kwargs):
            real_save({"partial": b"x" * 1_000_000}, f)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_die


class NanGradientAtStep(L.Callback):
    """Make one gradient non-finite at optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.fill_(float("nan"))


class StopAtStep(L.Callback):
    """Stop the run (as an interruption would) once optimizer step ``step`` is done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class RecordProgressTotal(L.Callback):
    """Remember the progress bar's total and description at the start of each training epoch, and its
    count and shown metrics at the end of training."""

    seen: list[tuple[float, str]] = []
    end: dict = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        bar = trainer.progress_bar_callback
        RecordProgressTotal.seen.append((bar.total_train_batches, bar._get_train_description(trainer.current_epoch)))

    def on_train_end(self, trainer, pl_module) -> None:
        bar = trainer.progress_bar_callback
        task = bar.progress.tasks[bar.train_progress_bar_id] if getattr(bar, "progress", None) is not None else None
        RecordProgressTotal.end = {
            "metrics": bar.get_metrics(trainer, pl_module),
            "completed": task.completed if task else None,
        }
