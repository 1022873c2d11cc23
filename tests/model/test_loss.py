"""The chunked linear cross-entropy equals plain cross-entropy on full logits, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anchor_lightning.model.loss import chunked_token_losses, resolve_implementation, summed_loss


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_loss_matches_full_logits(chunk):
    hidden = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(31, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 31, (50,))
    labels[::4] = -100
    ours = chunked_token_losses(hidden, weight, labels, chunk)
    ours.sum().backward()
    g_hidden, g_weight = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    reference = F.cross_entropy(hidden @ weight.t(), labels, ignore_index=-100, reduction="none")
    reference.sum().backward()
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_hidden, hidden.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_weight, weight.grad, rtol=0, atol=1e-12)
    assert (ours[::4] == 0).all()


def test_bf16_hidden_states_get_fp32_softmax():
    hidden = torch.randn(8, 16).bfloat16()
    weight = torch.randn(11, 16).bfloat16()
    labels = torch.randint(0, 11, (8,))
    assert chunked_token_losses(hidden, weight, labels).dtype == torch.float32


def test_summed_loss_flattens_batches_and_sums():
    hidden = torch.randn(2, 5, 8, dtype=torch.float64)
    weight = torch.randn(13, 8, dtype=torch.float64)
    labels = torch.randint(0, 13, (2, 5))
    total = summed_loss(hidden, weight, labels, "chunked", chunk_size=3)
    expected = F.cross_entropy((hidden @ weight.t()).flatten(0, 1), labels.flatten(), reduction="sum")
    torch.testing.assert_close(total, expected)


def test_liger_is_refused_without_cuda_and_auto_falls_back():
    assert resolve_implementation("auto", torch.device("cpu")) == "chunked"
    with pytest.raises(ValueError, match="liger"):
        resolve_implementation("liger", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown loss"):
        resolve_implementation("fused", torch.device("cpu"))
