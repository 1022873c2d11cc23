"""Model FLOPs of a packed batch, by DESIGN.md's rule (no credit for recomputation):

    6 * N * T  +  6 * n_layers * d_attn * sum(d_i ** 2)

N counts matmul parameters (every nn.Linear weight, lm_head included; the embedding lookup is not a
matmul), T the non-padding tokens, d_i the attention span of each packed document (its first token
or the shared anchor column included; the whole row under ``full``), d_attn = heads x head_dim.
"""

from __future__ import annotations

from torch import nn

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def matmul_parameters(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def attention_width(config) -> tuple[int, int]:
    """(layers, heads x head_dim) of a HF config."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers, config.num_attention_heads * head_dim


def batch_flops(matmul_params: int, n_layers: int, d_attn: int, tokens: int, attention_pairs: int) -> float:
    """Training FLOPs (forward + backward) of one batch; ``attention_pairs`` = sum(d_i ** 2)."""
    return 6.0 * matmul_params * tokens + 6.0 * n_layers * d_attn * attention_pairs


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak of a known card (by name), else None."""
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in device_name), None)
