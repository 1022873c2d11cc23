"""model/nonfinite.py: the non-finite policy, apart from Lightning."""

from __future__ import annotations

import pytest
import torch

from anchor_lightning.model.nonfinite import NonFiniteGuard, NonFiniteLoss


def test_stop_remembers_the_first_non_finite_step_and_names_its_rows():
    guard = NonFiniteGuard("stop")
    assert guard.after_clip(torch.tensor(1.0), [], step=0) is False
    guard.check({0: [3]}, rank=0)  # nothing non-finite yet
    guard.after_clip(torch.tensor(float("nan")), [], step=1)
    guard.after_clip(torch.tensor(float("inf")), [], step=2)  # a later one does not replace the first
    with pytest.raises(NonFiniteLoss, match=r"optimizer step 1 \(packed rows \[7, 8\] on rank 2\)"):
        guard.check({1: [7, 8], 2: [9]}, rank=2)


def test_skip_clears_the_gradients_of_a_non_finite_step_only():
    guard = NonFiniteGuard("skip")
    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.ones(2)
    assert guard.after_clip(torch.tensor(2.0), [weight], step=0) is False and weight.grad is not None
    assert guard.after_clip(torch.tensor(float("nan")), [weight], step=1) is True and weight.grad is None
    guard.check({}, rank=0)  # skipping never stops the run
