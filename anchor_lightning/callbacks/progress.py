"""Progress: a bar that counts optimizer steps (on a terminal), or plain lines (a log file, SLURM, CI).

Lightning's bar counts micro-batches (with gradient accumulation an 80-step run shows "160/80"),
prints the epoch as "0/-2" when only ``max_steps`` is set, shows the logger's version as
``v_num: 3.000`` and only the metrics logged with ``prog_bar``. This bar counts optimizer steps of
the remaining run and shows the loss, the learning rate and tokens/s; otherwise it is Lightning's
Rich bar (rich is one of this package's dependencies).
"""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from anchor_lightning.loggers import is_logging_step
from anchor_lightning.messages import number
from anchor_lightning.model.build import rope_base
from anchor_lightning.model.step_stats import ends_step

# what the bar shows, from the logged metrics: (key, label, format)
SHOWN = (
    ("train/loss", "loss", ".4f"),
    ("val/loss", "val/loss", ".4f"),
    ("train/lr", "lr", ".2e"),
    ("perf/tokens_per_sec", "tokens/s", ",.0f"),
)


def shown_metrics(metrics: dict) -> dict[str, str]:
    return {label: format(float(metrics[key]), spec) for key, label, spec in SHOWN if key in metrics}


class StepProgressBar(RichProgressBar):
    @property
    def total_train_batches(self):
        """Optimizer steps left in this epoch of the run."""
        trainer = self.trainer
        steps = trainer.num_training_batches // trainer.accumulate_grad_batches
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return min(steps, trainer.max_steps - trainer.global_step)
        return steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Advance once per optimizer step (the bar's count is the epoch's steps done)."""
        if not ends_step(trainer, batch_idx):
            return
        super().on_train_batch_end(
            trainer, pl_module, outputs, batch, (batch_idx + 1) // trainer.accumulate_grad_batches - 1
        )

    def get_metrics(self, trainer, pl_module) -> dict:
        return shown_metrics(trainer.callback_metrics)

    def _get_train_description(self, current_epoch: int) -> str:
        epochs = self.trainer.max_epochs
        description = f"Epoch {current_epoch}" + (f"/{epochs - 1}" if epochs is not None and epochs > 0 else "")
        return f"{description:{len(self.validation_description)}}"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress(L.Callback):
    """Progress as plain lines, for output that is not a terminal (nohup, SLURM, CI logs), where a live
    bar shows nothing until its last frame: a start banner (model, mode, backend and kernel, row length,
    rows per step, log and checkpoint directories), a line per logging step (step, loss, tokens/s,
    elapsed, ETA), validation results, and a closing line saying where everything went."""

    def __init__(self, stream=None) -> None:
        self.stream = stream
        self._start: float | None = None
        self._first_step = 0
        self._pending: tuple[int, int, float, float] | None = None

    def _print(self, trainer: L.Trainer, text: str) -> None:
        if trainer.is_global_zero:
            print(text, file=self.stream or sys.stdout, flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._first_step = time.perf_counter(), trainer.global_step
        module = pl_module
        parameters = sum(p.numel() for p in module.parameters())
        kernel = getattr(module, "varlen_kernel", None)
        rows = getattr(getattr(trainer, "datamodule", None), "train_sampler", None)
        rows_per_step = rows.rows_per_step if rows is not None else "?"
        resumed = f", resumed at step {trainer.global_step}" if trainer.global_step else ""
        # the path the user gave (a .gguf file, not its cached conversion), and the RoPE base it trains with
        given = dict(getattr(module, "hparams", None) or {}).get("pretrained") or getattr(module, "pretrained", None)
        config = getattr(module, "hf_config", None)
        base = rope_base(config) if config is not None else None
        self._print(
            trainer,
            (
                f"training {given or 'a random init'} ({parameters / 1e6:.1f}M parameters): "
                f"mode {getattr(module, 'mode', '?')}, backend {getattr(module, 'backend', '?')}"
                + (f" (kernel {kernel})" if kernel else "")
                + f", rows of {getattr(module, 'seq_len', '?')} slots"
                + (f", RoPE base {number(base)}" if base is not None else "")
                + f", {rows_per_step} rows per step, {trainer.max_steps} steps{resumed}"
            ),
        )
        self._print(trainer, f"  logs: {trainer.log_dir or 'none'}; checkpoints: {_checkpoint_dir(trainer) or 'none'}")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        # Lightning runs callbacks' hooks before the module's, which logs this step's metrics: the line is
        # written at the next hook, when they are there
        if not ends_step(trainer, batch_idx) or not is_logging_step(trainer):
            return
        step, total = trainer.global_step, trainer.max_steps
        elapsed = time.perf_counter() - (self._start or time.perf_counter())
        done = max(1, step - self._first_step)
        eta = elapsed / done * (total - step) if total and total > 0 else 0.0
        self._pending = (step, total, elapsed, eta)

    def _flush(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        step, total, elapsed, eta = self._pending
        self._pending = None
        shown = shown_metrics(trainer.callback_metrics)
        shown.pop("val/loss", None)  # validation gets its own line
        parts = [f"step {step}/{total}", *(f"{label} {value}" for label, value in shown.items())]
        parts.append(f"elapsed {_duration(elapsed)}, eta {_duration(eta)}")
        self._print(trainer, "  ".join(parts))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._flush(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        step, loaded = trainer.global_step, getattr(pl_module, "checkpoint_step", None)
        if trainer.state.fn == "validate" and loaded is not None:
            step = int(loaded)  # validate keeps the trainer at step 0: the checkpoint's own
        self._print(
            trainer,
            f"validation at step {step}: val/loss {float(trainer.callback_metrics['val/loss']):.4f}",
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        elapsed = time.perf_counter() - (self._start or time.perf_counter())
        self._print(
            trainer,
            f"done: step {trainer.global_step} in {_duration(elapsed)}; logs in {trainer.log_dir or 'none'}, "
            f"checkpoints in {_checkpoint_dir(trainer) or 'none'}",
        )


def _checkpoint_dir(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    return str(callback.dirpath) if isinstance(callback, ModelCheckpoint) and callback.dirpath else None
