"""Every installed FlashAttention varlen kernel computes per-document causal attention (GPU only).

Output and the gradients of q, k, v are compared with the float32 reference (causal SDPA per
segment) on the benchmark's head shape (32 query heads, 8 KV heads, head dim 64) and documents of
exponential length; each kernel's error must be of the size of PyTorch's own FlashAttention-2 error.
"""

from __future__ import annotations

import pytest
import torch

from anchor_lightning.attention import varlen_kernels as backends
from anchor_lightning.bench.documents import document_lengths

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

INSTALLED = [name for name in backends.VARLEN_KERNELS[1:] if backends._AVAILABLE[name]()]


def _problem(tokens=8192, heads=32, kv_heads=8, dim=64):
    lengths = document_lengths("exponential:1500:64:4096", tokens, 1)
    lengths[-1] -= sum(lengths) - tokens  # the last document ends with the row
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    g = torch.Generator("cuda").manual_seed(0)
    q, k, v = (
        torch.randn(tokens, h, dim, device="cuda", generator=g, dtype=torch.bfloat16)
        for h in (heads, kv_heads, kv_heads)
    )
    grad = torch.randn(tokens, heads, dim, device="cuda", generator=g, dtype=torch.bfloat16)
    return q, k, v, grad, cu, max(lengths)


def _run(fn, q, k, v, grad, *args):
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    out = fn(*leaves, *args)
    out.backward(grad.to(out.dtype))
    return [out.detach().float()] + [x.grad.float() for x in leaves]


@pytest.mark.parametrize("name", INSTALLED)
def test_each_installed_kernel_matches_the_reference(name):
    q, k, v, grad, cu, max_len = _problem()
    scale = q.shape[-1] ** -0.5
    reference = _run(lambda *t: backends._varlen_reference(*(x.float() for x in t[:3]), cu, scale), q, k, v, grad)
    torch_flash = _run(backends._MAKERS["torch"](), q, k, v, grad, cu, max_len, scale)
    got = _run(backends._MAKERS[name](), q, k, v, grad, cu, max_len, scale)
    for label, ref, base, x in zip(("out", "dq", "dk", "dv"), reference, torch_flash, got):
        error, base_error = (x - ref).abs().max().item(), (base - ref).abs().max().item()
        print(f"{name} {label}: max error {error:.2e} (PyTorch FA2 {base_error:.2e})")
        assert torch.isfinite(x).all()
        assert error <= 2 * base_error + 1e-3, f"{name} {label}: {error:.3e} vs PyTorch's {base_error:.3e}"
