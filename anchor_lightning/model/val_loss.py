"""The validation loss of a run: summed over every rank's labelled slots, divided once at the end, and
never an average of what stayed finite (a batch with a non-finite loss makes the whole loss NaN and is
counted, so a broken model cannot validate at a good-looking number)."""

from __future__ import annotations

import torch
from torchmetrics import SumMetric


class ValidationLoss(torch.nn.Module):
    """Three sums (torchmetrics, so Lightning reduces them over ranks): the loss, the labelled slots, and
    the batches whose loss was not finite. A module, so that it moves with the model's device."""

    def __init__(self) -> None:
        super().__init__()
        # nan_strategy "disable": a NaN loss stays NaN in the sum (the default drops it, and a broken
        # model then validated at loss 0)
        self.loss_sum, self.targets = SumMetric(nan_strategy="disable"), SumMetric()
        self.nonfinite = SumMetric()

    def update(self, summed_loss: torch.Tensor, targets: torch.Tensor | int) -> None:
        self.loss_sum.update(summed_loss)
        self.targets.update(targets)
        self.nonfinite.update((~torch.isfinite(summed_loss.detach())).float())

    def compute(self) -> tuple[torch.Tensor | None, int]:
        """(the loss per labelled slot, NaN if any batch was not finite; None without labelled slots),
        and the number of non-finite batches. Resets the sums for the next validation."""
        targets, nonfinite = self.targets.compute(), int(self.nonfinite.compute())
        loss = None
        if targets > 0:
            loss = self.loss_sum.compute() / targets
            if nonfinite:
                loss = torch.full_like(loss, float("nan"))
        for metric in (self.loss_sum, self.targets, self.nonfinite):
            metric.reset()
        return loss, nonfinite
