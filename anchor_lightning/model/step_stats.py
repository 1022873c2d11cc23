"""What training counts, in one place: the micro-batches of an optimizer step (:class:`StepRecord`), the
run's running totals (:class:`StepStats`, ``AnchorLM.stats``, kept in checkpoints), and the rule for
the last micro-batch of a step (:func:`ends_step`). The module writes them; the callbacks (throughput,
trace, progress, preemption) only read them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from anchor_lightning.model.flops import batch_flops


def ends_step(trainer, batch_idx: int) -> bool:
    """Whether micro-batch ``batch_idx`` is the last of its optimizer step (the one after which the
    optimizer steps, under ``trainer.accumulate_grad_batches``)."""
    return (batch_idx + 1) % trainer.accumulate_grad_batches == 0


class StepRecord:
    """What one rank accumulates over the micro-batches of an optimizer step (host numbers, one device
    tensor for the loss)."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | None = None
        self.rows: list[int] = []
        self.docs = self.tokens = self.attention_pairs = 0

    def add(self, loss_share: torch.Tensor, batch: Mapping[str, Any]) -> None:
        self.loss = loss_share if self.loss is None else self.loss + loss_share
        self.rows.extend(batch["rows"])
        self.docs += batch["num_docs"]
        self.tokens += batch["num_tokens"]
        self.attention_pairs += batch["attention_pairs"]

    def flops(self, matmul_params: int, n_layers: int, d_attn: int) -> float:
        return batch_flops(matmul_params, n_layers, d_attn, self.tokens, self.attention_pairs)


@dataclass
class StepStats:
    """The run's running totals (all ranks' tokens, this rank's FLOPs, skipped steps), the step being
    accumulated, the last finished one, and the rows of each step since the last logging step (named
    when a step turns out non-finite)."""

    tokens_seen: int = 0
    flops_seen: float = 0.0
    skipped_steps: int = 0
    current: StepRecord = field(default_factory=StepRecord)
    last: StepRecord = field(default_factory=StepRecord)
    rows: dict[int, list[int]] = field(default_factory=dict)  # optimizer step -> rows this rank trained on

    def finish(self, step: int, step_tokens: int, flops: float) -> None:
        """Close optimizer step ``step`` (its last micro-batch was added): count it and start the next."""
        self.tokens_seen += step_tokens
        self.flops_seen += flops
        self.rows[step] = self.current.rows
        self.last, self.current = self.current, StepRecord()

    def logged(self, step: int) -> None:
        """Step ``step`` was logged (its non-finite check done): forget the rows of the steps before it."""
        self.rows = {step: self.last.rows}

    def counters(self) -> dict:
        return {
            "tokens_seen": int(self.tokens_seen),
            "flops_seen": float(self.flops_seen),
            "skipped_steps": int(self.skipped_steps),
        }

    def restore(self, counters: dict) -> None:
        self.tokens_seen = counters.get("tokens_seen", 0)
        self.flops_seen = counters.get("flops_seen", 0.0)
        self.skipped_steps = counters.get("skipped_steps", 0)


def step_stats(module: object) -> StepStats:
    """The step statistics of a training module (``AnchorLM.stats``), for the callbacks that read them;
    one line when the module keeps none (a callback of ours put on another LightningModule)."""
    stats = getattr(module, "stats", None)
    if not isinstance(stats, StepStats):
        raise TypeError(f"{type(module).__name__} keeps no step statistics (the callback needs AnchorLM)")
    return stats
