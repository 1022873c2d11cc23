"""Which FlashAttention varlen kernel the ``varlen`` backend calls, and how each is called.

Availability means *imports*, not *found*: flash-attn-4 installs a ``flash_attn`` package that holds
only ``flash_attn.cute``, and the CuTe DSL has native parts. ``auto`` takes the fastest that imports
(FlashAttention-3 on Hopper, FlashAttention-4 on Hopper and newer, flash-attn 2, PyTorch's
``varlen_attn``); ``ANCHOR_VARLEN_KERNEL=fa3|fa4|fa2|torch`` names one, and a named kernel that is
missing or broken is an error, not a fallback. Every kernel is called as
``f(q, k, v, cu_seqlens, max_seqlen, scale)`` on [tokens, heads, head_dim] tensors, causal within
each segment; :func:`_varlen_reference` is the definition they are tested against.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import warnings

import torch
import torch.nn.functional as F

from anchor_lightning.errors import RunWarning

VARLEN_KERNELS = ("auto", "fa3", "fa4", "fa2", "torch")
VARLEN_KERNEL_ENV = "ANCHOR_VARLEN_KERNEL"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package is missing
        return False


def _flash_attn_2():
    """flash-attn 2's varlen function, or None (the ``flash_attn`` package that flash-attn-4 installs
    holds only ``flash_attn.cute``)."""
    if not _importable("flash_attn"):
        return None
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def _fa3():
    from flash_attn_interface import flash_attn_varlen_func as fa3_varlen

    def fa3(q, k, v, cu, max_len, scale):
        out = fa3_varlen(q, k, v, cu, cu, max_len, max_len, softmax_scale=scale, causal=True)
        return out[0] if isinstance(out, tuple) else out  # some FA3 releases also return the LSE

    return fa3


def _fa4():
    from flash_attn.cute import flash_attn_varlen_func as fa4_varlen

    def fa4(q, k, v, cu, max_len, scale):
        out = fa4_varlen(
            q,
            k,
            v,
            cu_seqlens_q=cu,
            cu_seqlens_k=cu,
            max_seqlen_q=max_len,
            max_seqlen_k=max_len,
            softmax_scale=scale,
            causal=True,
        )
        return out[0] if isinstance(out, tuple) else out  # (out, lse)

    return fa4


def _fa2():
    flash_attn_varlen_func = _flash_attn_2()

    def fa2(q, k, v, cu, max_len, scale):
        return flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len, softmax_scale=scale, causal=True)

    return fa2


def _torch_varlen():
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    extra = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    gqa = "enable_gqa" in params

    def torch_varlen(q, k, v, cu, max_len, scale):
        opts = dict(extra, enable_gqa=True) if gqa and k.shape[1] != q.shape[1] else extra
        return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scale, **opts)

    return torch_varlen


def _imports(module: str) -> bool:
    """Whether ``module`` imports: found is not enough (flash-attn-4 needs the CuTe DSL packages too)."""
    if not _importable(module):
        return False
    try:
        importlib.import_module(module)
    except Exception as error:  # a broken install: auto skips it, a named choice reports it
        warnings.warn(
            f"{module} is installed but does not import ({type(error).__name__}: {error})",
            category=RunWarning,
            stacklevel=3,
        )
        return False
    return True


_AVAILABLE = {
    "fa3": lambda: _imports("flash_attn_interface"),
    "fa4": lambda: _imports("flash_attn.cute"),
    "fa2": lambda: _flash_attn_2() is not None,
    "torch": lambda: True,
}
_MAKERS = {"fa3": _fa3, "fa4": _fa4, "fa2": _fa2, "torch": _torch_varlen}


def choose_varlen_kernel(requested: str | None = None) -> str:
    """Which FlashAttention varlen kernel the varlen backend calls. ``auto`` (the default; or the
    ``ANCHOR_VARLEN_KERNEL`` environment variable): FlashAttention-3 (``flash_attn_interface``) on
    Hopper, then FlashAttention-4 (``flash_attn.cute``, package ``flash-attn-4``) on Hopper and newer,
    then flash-attn 2, then PyTorch's ``varlen_attn``; the first importable one. A named kernel that
    is not installed is an error, not a silent fallback."""
    requested = requested or os.environ.get(VARLEN_KERNEL_ENV) or "auto"
    if requested not in VARLEN_KERNELS:
        raise ValueError(f"unknown varlen kernel {requested!r} (choose from {', '.join(VARLEN_KERNELS)})")
    if requested != "auto":
        if not _AVAILABLE[requested]():
            raise RuntimeError(
                f"varlen kernel {requested!r} was asked for ({VARLEN_KERNEL_ENV}) but is not installed "
                "or does not import"
            )
        return requested
    major = torch.cuda.get_device_capability()[0] if torch.cuda.is_available() else 0
    order = (["fa3"] if major == 9 else []) + (["fa4"] if major >= 9 else []) + ["fa2", "torch"]
    return next(name for name in order if _AVAILABLE[name]())


def runs_varlen_kernel(backend: str, mode: str, device_type: str = "cuda") -> bool:
    """Whether attention goes through the varlen kernel: the varlen backend on CUDA, except in ``full``
    mode, where the row is one causal segment and SDPA's causal kernel computes it (faster)."""
    return backend == "varlen" and mode != "full" and device_type == "cuda"


@functools.cache
def _varlen_kernel():
    """The chosen varlen function, called as f(q, k, v, cu_seqlens, max_seqlen, scale)."""
    return _MAKERS[choose_varlen_kernel()]()


def _varlen_reference(q, k, v, cu_seqlens, scale):
    """Causal attention per segment, on any device and dtype: the varlen function's definition."""
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    gqa = k.shape[1] != q.shape[1]
    for start, end in zip(bounds[:-1], bounds[1:]):
        seg = [x[start:end].transpose(0, 1) for x in (q, k, v)]
        o = F.scaled_dot_product_attention(*seg, is_causal=True, scale=scale, enable_gqa=gqa)
        out[start:end] = o.transpose(0, 1)
    return out
