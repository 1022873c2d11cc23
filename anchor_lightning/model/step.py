"""The packed training step's forward: one function that ``fit`` (``AnchorLM``) and both benchmarks
(``bench/worker.py``, ``bench/distributed.py``) run, so a benchmark measures exactly the step users run.

Given a :class:`~anchor_lightning.data.batch.Batch` (the batch contract), it takes this rank's slots
under sequence parallelism (attention still sees the whole row), builds the backend's attention inputs,
keeps activations in host memory when asked, and returns the loss of the labelled slots: their sum
(training; the caller divides by the step's labelled slots) or one per slot (evaluation). Precision
(autocast) stays with the caller: Lightning's precision plugin in ``fit``, the benchmark's own setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from anchor_lightning.attention.backends import prepare
from anchor_lightning.data.batch import Batch
from anchor_lightning.model.causal_lm import PackedCausalLM
from anchor_lightning.model.kernels import offloaded_activations
from anchor_lightning.parallel.sequence import local_slots


@dataclass(frozen=True)
class StepSettings:
    """How the step runs: the attention backend, the loss kernel (``auto``/``liger``/``chunked``) and its
    chunk of slots, and whether checkpointed layers' inputs wait in host memory."""

    backend: str
    loss: str = "auto"
    loss_chunk_size: int = 4096
    offload_activations: bool = False


def packed_loss(
    net: PackedCausalLM,
    batch: Batch,
    settings: StepSettings,
    group=None,
    reduction: Literal["sum", "none"] = "sum",
) -> torch.Tensor:
    """The loss of ``batch``'s labelled slots (this rank's share of each row when ``group`` is a
    sequence-parallel group): a scalar sum, or per-slot losses [B, T] (0 where unlabelled)."""
    slots = local_slots(batch["input_ids"].shape[1], group) if group is not None else slice(None)
    with offloaded_activations(settings.offload_activations and torch.is_grad_enabled()):
        return net(
            batch["input_ids"][:, slots],
            batch["position_ids"][:, slots],
            batch["labels"][:, slots],
            prepare(batch, settings.backend, group),
            settings.loss,
            settings.loss_chunk_size,
            reduction,
        )
