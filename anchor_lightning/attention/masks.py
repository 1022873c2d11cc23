"""Which key slot each query slot may attend to, from the batch's ``doc_ids``: pure functions.

One rule, written twice (dense for SDPA, a ``mask_mod`` for flex attention):

* ``full``: causal over the whole row;
* every other mode: causal within the query's packed document;
* ``shared`` layout: additionally, slot 0 (the shared anchor) is visible to every query.

Padding is a document of its own (doc id -2) at the end of the row, so no real token sees it and each
padding slot sees at least itself (no fully masked rows, no NaN).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def allowed(doc_q: torch.Tensor, doc_k: torch.Tensor, q: torch.Tensor, k: torch.Tensor, mode: str, layout: str):
    """Elementwise rule on broadcastable tensors of doc ids and slot indices."""
    causal = q >= k
    if mode == "full":
        return causal
    visible = doc_q == doc_k
    if layout == "shared":
        visible = visible | (k == 0)
    return causal & visible


def dense_mask(doc_ids: torch.Tensor, mode: str, layout: str) -> torch.Tensor:
    """Boolean mask [B, 1, T, T], True where attention is allowed."""
    t = doc_ids.shape[-1]
    idx = torch.arange(t, device=doc_ids.device)
    mask = allowed(doc_ids[:, :, None], doc_ids[:, None, :], idx[:, None], idx[None, :], mode, layout)
    return mask.expand(doc_ids.shape[0], t, t)[:, None]


def mask_mod(doc_ids: torch.Tensor, mode: str, layout: str) -> Callable:
    """A flex-attention ``mask_mod(b, h, q_idx, kv_idx)`` closing over the batch's doc ids."""

    def mod(b, h, q_idx, kv_idx):
        return allowed(doc_ids[b, q_idx], doc_ids[b, kv_idx], q_idx, kv_idx, mode, layout)

    return mod
