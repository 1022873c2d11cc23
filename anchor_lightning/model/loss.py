"""Cross-entropy from the last hidden states without materialising full fp32 logits.

Calling a HF model with ``labels`` on a long row upcasts the whole [T, vocab] logits tensor to fp32
(tens of GiB at 64K). Here the output projection and the loss run together:

* ``liger``: Liger's fused linear cross-entropy (CUDA, when ``liger-kernel`` is importable);
* ``chunked``: pure PyTorch, a chunk of rows at a time; each chunk's logits are recomputed in the
  backward pass (activation checkpointing), so at most one chunk of logits is alive. Any device/dtype.

Logits are computed in the activation dtype (bf16 under autocast) and the softmax in fp32, as HF does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from anchor_lightning.data.packing import IGNORE_INDEX
from anchor_lightning.model.kernels import liger_available

LOSS_IMPLEMENTATIONS = ("auto", "liger", "chunked")


def resolve_implementation(name: str, device: torch.device) -> str:
    if name not in LOSS_IMPLEMENTATIONS:
        raise ValueError(f"unknown loss implementation {name!r} (choose from {', '.join(LOSS_IMPLEMENTATIONS)})")
    if name == "auto":
        return "liger" if device.type == "cuda" and liger_available() else "chunked"
    if name == "liger" and not (device.type == "cuda" and liger_available()):
        raise ValueError("loss 'liger' needs liger-kernel and a CUDA device")
    return name


def _chunk_losses(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = hidden @ weight.t()
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32; fp64 stays fp64
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")


def chunked_token_losses(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int = 4096
) -> torch.Tensor:
    """Per-slot losses [N] (at least fp32) (0 where the label is -100) of ``hidden [N, D] @ weight[V, D]^T``."""
    pieces = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start : start + chunk_size], labels[start : start + chunk_size]
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            pieces.append(checkpoint(_chunk_losses, h, weight, y, use_reentrant=False))
        else:
            pieces.append(_chunk_losses(h, weight, y))
    return torch.cat(pieces)


def summed_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    implementation: str = "auto",
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Sum of the cross-entropy over labelled slots (fp32 scalar); hidden [..., D], labels [...]."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    if resolve_implementation(implementation, hidden.device) == "liger":
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else hidden.dtype
        return liger_fused_linear_cross_entropy(
            hidden.to(dtype), weight.to(dtype), labels, ignore_index=IGNORE_INDEX, reduction="sum"
        ).float()
    return chunked_token_losses(hidden, weight, labels, chunk_size).sum()
