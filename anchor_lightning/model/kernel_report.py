"""What a run computes with: the kernels ``fit`` announces, and the faster ones a GPU could have.

:func:`describe` names, in one line, the attention kernel, the fused norm/RoPE/SwiGLU kernels, the
loss and the precision of the linear layers, as they were resolved for this run (not as configured:
``auto`` has been decided by then). :func:`missing` lists what the README's GPU install
(``pip install 'anchor-lightning[gpu]'``) would add on this device and is not installed; ``fit``
warns once with it, so that a slower run is never silent. Both are pure functions of the choices.
"""

from __future__ import annotations

GPU_INSTALL = "pip install 'anchor-lightning[gpu]'"
VARLEN_NAMES = {
    "fa3": "FlashAttention-3",
    "fa4": "FlashAttention-4",
    "fa2": "FlashAttention-2",
    "torch": "PyTorch varlen_attn",
}


def attention_kernel(backend: str, mode: str, device_type: str, varlen_kernel: str | None) -> str:
    """The attention computation of this backend, mode and device, in words."""
    if backend == "sdpa":
        return "SDPA with a dense mask"
    if backend == "flex":
        return "flex attention with a block mask"
    if device_type != "cuda":
        return "SDPA per document segment (the CPU reference)"
    if mode == "full" or varlen_kernel is None:
        return "SDPA's causal kernel (full mode: the row is one segment)"
    return f"{VARLEN_NAMES.get(varlen_kernel, varlen_kernel)} over document segments"


def compute_precision(precision: str | None) -> str:
    """The precision the matmuls run in under Lightning's ``trainer.precision`` (None: no trainer, the
    module's fp32 weights as they are)."""
    if precision is None:
        return "fp32"
    for prefix, name in (
        ("bf16", "bf16"),
        ("16", "fp16"),
        ("64", "fp64"),
        ("transformer-engine", "FP8 (Transformer Engine)"),
    ):
        if str(precision).startswith(prefix):
            return name
    return "fp32"


def describe(
    attention: str,
    kernels: str,
    loss: str,
    float8: str | None = None,
    converted: int = 0,
    linears: int = 0,
    *,
    compute: str,
) -> str:
    """One line: ``kernels: attention ...; norms/RoPE/SwiGLU ...; loss ...; linear layers ...``, the linear
    layers in ``compute`` (:func:`compute_precision`) where they are not FP8."""
    fused = "Liger" if kernels == "liger" else "transformers' own"
    lossed = "Liger fused linear cross-entropy" if loss == "liger" else "chunked cross-entropy"
    if float8 is None:
        linear = compute
    else:
        linear = f"FP8 {float8} in {converted} of {linears} (the rest {compute})"
    return f"kernels: attention {attention}; norms/RoPE/SwiGLU {fused}; loss {lossed}; linear layers {linear}"


def missing(
    device_type: str,
    capability: tuple[int, int] | None,
    backend: str,
    mode: str,
    varlen_kernel: str | None,
    liger_installed: bool,
) -> list[str]:
    """The faster kernels the GPU install would bring here and that are not installed (empty off CUDA):
    FlashAttention-4 where the varlen backend runs PyTorch's or flash-attn 2's kernel on Hopper or
    newer, and Liger's fused kernels and loss."""
    if device_type != "cuda":
        return []
    wanted = []
    hopper = capability is not None and capability >= (9, 0)
    if backend == "varlen" and mode != "full" and hopper and varlen_kernel in ("fa2", "torch"):
        wanted.append("flash-attn-4 (FlashAttention-4, faster than " + VARLEN_NAMES[varlen_kernel] + " here)")
    if not liger_installed:
        wanted.append("liger-kernel (fused norms, RoPE, SwiGLU and loss)")
    return wanted


def missing_warning(wanted: list[str]) -> str:
    return f"faster kernels for this GPU are not installed: {'; '.join(wanted)}. {GPU_INSTALL} brings them"
