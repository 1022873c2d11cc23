"""The non-finite policy (``model.on_nonfinite``): a step whose gradient norm is not finite either stops
the run, naming the step and its rows (``stop``: recorded on the device, checked without a sync at the
next logging step, checkpoint or end), or is dropped (``skip``: its gradients cleared, one sync a step)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from anchor_lightning.errors import UserError


class NonFiniteLoss(UserError):
    """Training produced a non-finite loss or gradient."""


class NonFiniteGuard:
    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.first_step: torch.Tensor | None = None  # the first non-finite step, -1 while none (device)

    def after_clip(self, norm: torch.Tensor, params: Iterable[torch.nn.Parameter], step: int) -> bool:
        """Watch optimizer step ``step``'s gradient norm; under ``skip`` drop a non-finite step's
        gradients and say so (True), under ``stop`` remember the first such step on the device."""
        finite = torch.isfinite(norm)
        if self.policy == "skip":
            if not finite:  # one device sync per step, the price of skipping
                for p in params:
                    p.grad = None
                return True
            return False
        first = self.first_step if self.first_step is not None else torch.full_like(norm, -1.0)
        self.first_step = torch.where(finite | (first >= 0), first, torch.full_like(norm, float(step)))
        return False

    def check(self, rows_of_step: dict[int, list[int]], rank: int) -> None:
        """Stop with the first non-finite step and its rows (a device sync: called at log steps)."""
        if self.first_step is None or self.first_step.item() < 0:
            return
        step = int(self.first_step.item())
        rows = rows_of_step.get(step)
        where = f"packed rows {rows} on rank {rank}" if rows is not None else f"rank {rank}"
        raise NonFiniteLoss(
            f"non-finite loss or gradient at optimizer step {step} ({where}); "
            "the run stops here (no checkpoint holds it); set model.on_nonfinite=skip to drop such steps instead",
            field="model.on_nonfinite",
        )
