"""Tokens per second from the host clock between optimizer steps (no device sync of its own)."""

from __future__ import annotations

import time

import lightning as L


class TokenThroughput(L.Callback):
    """Logs ``perf/tokens_per_sec``: non-padding tokens of all ranks per second of wall time, averaged
    over the steps since the last log (the first window after start or resume is skipped: it holds
    compilation and warm-up)."""

    def __init__(self) -> None:
        self._mark: tuple[float, int] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        now, tokens = time.perf_counter(), pl_module.tokens_seen
        if trainer.global_step % trainer.log_every_n_steps:
            return
        if self._mark is not None and now > self._mark[0]:
            pl_module.log("perf/tokens_per_sec", (tokens - self._mark[1]) / (now - self._mark[0]))
        self._mark = (now, tokens)
