"""Attention backends, registered with transformers' ``AttentionInterface`` (no modeling code is copied).

The model is called with one extra keyword, ``anchor_attention`` (an :class:`AttentionInputs` built
once per batch by :func:`prepare`); transformers hands it, untouched, to the registered function of
every layer. With a custom implementation name transformers builds no mask of its own
(``attention_mask`` is ``None``) and never infers documents from ``position_ids``.

* ``sdpa``: ``scaled_dot_product_attention`` with a dense boolean mask (plain causal for ``full``);
  CPU and small GPU runs; the numerical reference.
* ``varlen``: FlashAttention over ``cu_seqlens`` (the fastest importable kernel: FlashAttention-3
  or -4 on Hopper, else flash-attn 2, else PyTorch's ``varlen_attn``; see ``attention/varlen_kernels.py``);
  per_doc layout only. In ``full`` mode (one causal segment per row) on CUDA it calls SDPA's causal kernel
  instead, the same function and faster (cuDNN on Hopper). On CPU a per-segment SDPA loop computes
  the same function (slow; it exists so the CPU tests exercise the varlen path).
* ``flex``: ``flex_attention`` with a ``BlockMask`` built once per batch (compiled on CUDA).

All three keep grouped-query attention native: K/V heads are never repeated. With sequence
parallelism (``AttentionInputs.sequence_group``) each rank holds a slice of the row's slots and an
all-to-all around the backend gives it the whole row for a slice of the heads
(``anchor_lightning.parallel.sequence``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from anchor_lightning.attention import masks
from anchor_lightning.attention.varlen_kernels import _varlen_kernel, _varlen_reference, runs_varlen_kernel
from anchor_lightning.parallel.sequence import heads_to_seq, scatter_heads

BACKENDS = ("sdpa", "varlen", "flex")
IMPLEMENTATION_NAMES = {b: f"anchor_{b}" for b in BACKENDS}
KWARG = "anchor_attention"


def default_layout(backend: str, mode: str) -> str:
    """``shared`` (one anchor column) where it exists: anchor mode on sdpa/flex; varlen can only
    express per-document segments, and the baselines have no shared anchor."""
    return "shared" if mode == "anchor" and backend != "varlen" else "per_doc"


def check_backend_layout(backend: str, layout: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "varlen" and layout != "per_doc":
        raise ValueError("backend 'varlen' needs layout 'per_doc' (segments cannot share an anchor column)")


@dataclass
class AttentionInputs:
    """Per-batch attention metadata, shared by every layer of one forward pass."""

    backend: str
    mode: str
    layout: str
    seq_len: int
    mask: Any = None  # dense bool mask [B, 1, T, T] (sdpa) or BlockMask (flex); None: plain causal
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int | None = None
    sequence_group: Any = None  # a process group sharing each row (Ulysses); None: whole rows here


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=False)


def prepare(batch: Mapping[str, Any], backend: str, sequence_group=None) -> AttentionInputs:
    """Build the backend's mask or boundaries from a batch (on the batch's device). The batch holds
    whole rows; with a ``sequence_group`` the model sees this rank's slots and attention the whole row."""
    mode, layout = batch["mode"], batch["layout"]
    check_backend_layout(backend, layout)
    doc_ids = batch["doc_ids"]
    bsz, seq_len = doc_ids.shape
    inputs = AttentionInputs(backend, mode, layout, seq_len, sequence_group=sequence_group)
    if backend == "varlen":
        inputs.cu_seqlens = batch["cu_seqlens"]
        inputs.max_seqlen = int(batch["max_seqlen"])
    elif backend == "sdpa" and mode != "full":
        inputs.mask = masks.dense_mask(doc_ids, mode, layout)
    elif backend == "flex":
        from torch.nn.attention.flex_attention import create_block_mask

        build = _compiled(create_block_mask) if doc_ids.is_cuda else create_block_mask
        inputs.mask = build(masks.mask_mod(doc_ids, mode, layout), bsz, None, seq_len, seq_len, device=doc_ids.device)
    return inputs


def _inputs(kwargs: dict, backend: str) -> AttentionInputs:
    inputs = kwargs.get(KWARG)
    if inputs is None:
        raise RuntimeError(
            f"the anchor attention backends need the batch's boundaries: call the model with {KWARG}=prepare(batch, backend)"
        )
    if inputs.backend != backend:
        raise RuntimeError(f"inputs prepared for backend {inputs.backend!r} reached the {backend!r} attention function")
    return inputs


def _check_window(sliding_window: int | None, seq_len: int) -> None:
    if sliding_window is not None and sliding_window < seq_len:
        raise ValueError(
            f"the model uses a sliding window of {sliding_window} tokens, shorter than the row length {seq_len}; "
            "AnchorAttention does not implement sliding windows: disable it in the model config or use shorter rows"
        )


def _kernel_dtype(t: torch.Tensor) -> torch.dtype:
    """FlashAttention kernels take 16-bit inputs: under autocast, its dtype; otherwise bf16."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.dtype
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return torch.bfloat16


def sdpa_attention(inputs: AttentionInputs, query, key, value, scaling, dropout):
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=inputs.mask,
        dropout_p=dropout,
        is_causal=inputs.mask is None,
        scale=scaling,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous()


def varlen_attention(inputs: AttentionInputs, query, key, value, scaling, dropout):
    if dropout:
        raise ValueError("the varlen backend does not implement attention dropout")
    if query.is_cuda and not runs_varlen_kernel(inputs.backend, inputs.mode):
        # one causal segment per row: SDPA's causal kernel is the same function and picks the fastest
        # implementation (cuDNN's on Hopper, faster than FlashAttention-2 here)
        dtype = _kernel_dtype(query)
        out = F.scaled_dot_product_attention(
            query.to(dtype),
            key.to(dtype),
            value.to(dtype),
            is_causal=True,
            scale=scaling,
            enable_gqa=key.shape[1] != query.shape[1],
        )
        return out.to(query.dtype).transpose(1, 2).contiguous()
    bsz, _, seq_len, head_dim = query.shape
    q, k, v = (x.transpose(1, 2).reshape(bsz * seq_len, x.shape[1], head_dim) for x in (query, key, value))
    if q.is_cuda:
        dtype = _kernel_dtype(q)
        out = _varlen_kernel()(q.to(dtype), k.to(dtype), v.to(dtype), inputs.cu_seqlens, inputs.max_seqlen, scaling)
        out = out.to(query.dtype)
    else:
        out = _varlen_reference(q, k, v, inputs.cu_seqlens, scaling)
    return out.view(bsz, seq_len, -1, head_dim)


def flex_attention(inputs: AttentionInputs, query, key, value, scaling, dropout):
    from torch.nn.attention.flex_attention import flex_attention as flex

    if dropout:
        raise ValueError("the flex backend does not implement attention dropout")
    gqa = key.shape[1] != query.shape[1]
    if query.is_cuda:
        dtype = _kernel_dtype(query)
        out = _compiled(flex)(
            query.to(dtype), key.to(dtype), value.to(dtype), block_mask=inputs.mask, scale=scaling, enable_gqa=gqa
        ).to(query.dtype)
    else:
        out = flex(query, key, value, block_mask=inputs.mask, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous()


_FUNCTIONS = {"sdpa": sdpa_attention, "varlen": varlen_attention, "flex": flex_attention}


def attention_function(backend: str):
    """The function transformers calls for ``anchor_<backend>``: q/k/v [B, H, T, D] of the slots this
    rank holds in, [B, T, H, D] out; with a sequence group, all-to-alls around the whole-row attention."""
    core = _FUNCTIONS[backend]

    def attend(
        module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, sliding_window=None, **kwargs
    ):
        inputs = _inputs(kwargs, backend)
        _check_window(sliding_window, inputs.seq_len)
        group = inputs.sequence_group
        if group is None:
            return core(inputs, query, key, value, scaling, dropout), None
        out = core(inputs, *scatter_heads(query, key, value, group), scaling, dropout)  # [B, T, H/P, D]
        return heads_to_seq(out.transpose(1, 2), group).transpose(1, 2).contiguous(), None

    attend.__name__ = f"anchor_{backend}_attention"
    return attend


def register() -> None:
    """Make ``anchor_sdpa``, ``anchor_varlen`` and ``anchor_flex`` known to transformers (idempotent)."""
    for backend in BACKENDS:
        AttentionInterface.register(IMPLEMENTATION_NAMES[backend], attention_function(backend))


register()
