"""The kernels ``fit`` announces and the faster ones it says are missing (model/kernel_report.py)."""

from __future__ import annotations

import pytest

from anchor_lightning.model.kernel_report import (
    GPU_INSTALL,
    attention_kernel,
    compute_precision,
    describe,
    missing,
    missing_warning,
)
from anchor_lightning.model.module import AnchorLM
from tests.conftest import tiny_config


def test_the_attention_kernel_in_words():
    assert attention_kernel("varlen", "anchor", "cuda", "fa4") == "FlashAttention-4 over document segments"
    assert attention_kernel("varlen", "intra_doc", "cuda", "torch") == "PyTorch varlen_attn over document segments"
    assert attention_kernel("varlen", "full", "cuda", None).startswith("SDPA's causal kernel")
    assert attention_kernel("varlen", "anchor", "cpu", None) == "SDPA per document segment (the CPU reference)"
    assert attention_kernel("sdpa", "anchor", "cuda", None) == "SDPA with a dense mask"
    assert attention_kernel("flex", "anchor", "cuda", None) == "flex attention with a block mask"


def test_the_banner_line():
    assert describe(
        "FlashAttention-4 over document segments", "liger", "liger", "tensorwise", 150, 211, compute="bf16"
    ) == (
        "kernels: attention FlashAttention-4 over document segments; norms/RoPE/SwiGLU Liger; "
        "loss Liger fused linear cross-entropy; linear layers FP8 tensorwise in 150 of 211 (the rest bf16)"
    )
    assert describe("SDPA with a dense mask", "none", "chunked", compute="bf16").endswith(
        "norms/RoPE/SwiGLU transformers' own; loss chunked cross-entropy; linear layers bf16"
    )
    assert describe("SDPA with a dense mask", "none", "chunked", compute="fp32").endswith("; linear layers fp32")
    assert describe("x", "none", "chunked", "rowwise", 2, 3, compute="fp32").endswith(
        "FP8 rowwise in 2 of 3 (the rest fp32)"
    )


def test_the_linear_layers_precision_follows_the_trainer():
    """The banner names what the matmuls run in: a CPU run in 32-true is fp32, never bf16."""
    assert [compute_precision(p) for p in ("bf16-mixed", "bf16-true", "32-true", "32", "64-true", None)] == [
        "bf16",
        "bf16",
        "fp32",
        "fp32",
        "fp64",
        "fp32",
    ]


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (("cpu", None, "varlen", "anchor", None, False), []),  # nothing to say off CUDA
        (("cuda", (9, 0), "varlen", "anchor", "fa4", True), []),  # the shipped fast path
        (("cuda", (9, 0), "varlen", "anchor", "torch", True), ["flash-attn-4"]),
        (("cuda", (10, 0), "varlen", "intra_doc", "fa2", True), ["flash-attn-4"]),
        (("cuda", (8, 0), "varlen", "anchor", "fa2", True), []),  # FA4 needs Hopper or newer
        (("cuda", (9, 0), "varlen", "full", None, True), []),  # full mode runs SDPA's causal kernel
        (("cuda", (9, 0), "sdpa", "anchor", None, False), ["liger-kernel"]),
        (("cuda", (9, 0), "varlen", "anchor", "torch", False), ["flash-attn-4", "liger-kernel"]),
    ],
)
def test_what_the_gpu_install_would_add(args, wanted):
    assert [item.split(" ")[0] for item in missing(*args)] == wanted


def test_the_warning_says_how_to_install():
    text = missing_warning(missing("cuda", (9, 0), "varlen", "anchor", "torch", False))
    assert text.endswith(f"{GPU_INSTALL} brings them") and "\n" not in text


def test_the_module_announces_its_kernels_when_built(capsys):
    module = AnchorLM(config=tiny_config("llama").to_dict(), backend="sdpa", seq_len=64)
    module.configure_model()
    line = [text for text in capsys.readouterr().out.splitlines() if text.startswith("kernels:")]
    assert line == [
        "kernels: attention SDPA with a dense mask; norms/RoPE/SwiGLU transformers' own; "
        "loss chunked cross-entropy; linear layers fp32"  # no trainer: the fp32 weights as they are
    ]
