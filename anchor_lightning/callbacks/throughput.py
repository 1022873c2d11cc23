"""Throughput, MFU and memory, from the host clock between logging steps (no device sync of its own)."""

from __future__ import annotations

import time

import lightning as L
import torch

from anchor_lightning.loggers import is_logging_step
from anchor_lightning.model.flops import peak_flops
from anchor_lightning.model.step_stats import ends_step, step_stats


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
        self._mark: tuple[float, int, float] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = trainer.strategy.root_device
        if device.type == "cuda":
            self.peak = peak_flops(torch.cuda.get_device_name(device))
        self._mark = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if not ends_step(trainer, batch_idx) or not is_logging_step(trainer):
            return
        stats = step_stats(pl_module)
        now, tokens, flops = time.perf_counter(), stats.tokens_seen, stats.flops_seen
        if self._mark is not None and now > self._mark[0]:
            elapsed = now - self._mark[0]
            rate = (tokens - self._mark[1]) / elapsed
            pl_module.log("perf/tokens_per_sec", rate)
            pl_module.log("perf/tokens_per_sec_per_device", rate / trainer.world_size)
            if self.peak:
                pl_module.log("perf/mfu", (flops - self._mark[2]) / elapsed / self.peak)
        if trainer.strategy.root_device.type == "cuda":
            pl_module.log("memory/peak_gib", torch.cuda.max_memory_allocated(trainer.strategy.root_device) / 2**30)
        self._mark = (now, tokens, flops)
