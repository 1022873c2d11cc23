"""Throughput, MFU and memory, from the host clock between logging steps (no device sync of its own),
less the time the run spent on anything but training: validation, and the evaluations our callbacks
run between steps (:meth:`TokenThroughput.paused`), as Lightning's own ThroughputMonitor leaves
validation out."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import lightning as L
import torch

from anchor_lightning.loggers import is_logging_step
from anchor_lightning.model.flops import peak_flops
from anchor_lightning.model.step_stats import ends_step, step_stats


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class TokenThroughput(L.Callback):
    """Logs, averaged over the steps since the previous log (the first window after a start or resume is
    skipped: it holds compilation and warm-up):

    * ``perf/tokens_per_sec``: non-padding tokens of all ranks per second;
    * ``perf/tokens_per_sec_per_device``;
    * ``perf/mfu``: this rank's model FLOPs per second (docs/design.md's FLOPs rule) over the card's dense bf16
      peak (``$ANCHOR_PEAK_TFLOPS``, else the datasheet value of a known card: ``model/flops.py``);
    * ``memory/peak_gib``: the most CUDA memory allocated so far on this rank.
    """

    def __init__(self) -> None:
        self.peak: float | None = None
        self._mark: tuple[float, int, float, float] | None = None  # time, tokens, FLOPs, paused seconds
        self._paused = 0.0  # seconds spent outside training so far
        self._depth, self._pause_began = 0, 0.0

    def pause(self) -> None:
        """From now until :meth:`resume` is not training time (nested pauses count once). A pause begins
        and ends with a device sync (one per evaluation), so the steps' queued work counts as training."""
        if self._depth == 0:
            _sync()
            self._pause_began = time.perf_counter()
        self._depth += 1

    def resume(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            _sync()
            self._paused += time.perf_counter() - self._pause_began

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = trainer.strategy.root_device
        if device.type == "cuda":
            self.peak = peak_flops(torch.cuda.get_device_name(device))
        self._mark = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.pause()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resume()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not ends_step(trainer, batch_idx) or not is_logging_step(trainer):
            return
        stats = step_stats(pl_module)
        now, tokens, flops, paused = time.perf_counter(), stats.tokens_seen, stats.flops_seen, self._paused
        elapsed = now - self._mark[0] - (paused - self._mark[3]) if self._mark is not None else 0.0
        if self._mark is not None and elapsed > 0:
            rate = (tokens - self._mark[1]) / elapsed
            pl_module.log("perf/tokens_per_sec", rate)
            pl_module.log("perf/tokens_per_sec_per_device", rate / trainer.world_size)
            if self.peak:
                pl_module.log("perf/mfu", (flops - self._mark[2]) / elapsed / self.peak)
        if trainer.strategy.root_device.type == "cuda":
            pl_module.log("memory/peak_gib", torch.cuda.max_memory_allocated(trainer.strategy.root_device) / 2**30)
        self._mark = (now, tokens, flops, paused)
