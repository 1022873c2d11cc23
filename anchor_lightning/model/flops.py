"""Model FLOPs of a packed batch, by docs/design.md's FLOPs rule (no credit for recomputation):

    6 * N * T  +  6 * n_layers * d_attn * sum(d_i ** 2)

N counts matmul parameters (every nn.Linear weight, lm_head included; the embedding lookup is not a
matmul), T the non-padding tokens, d_i the attention span of each packed document (its first token
or the shared anchor column included; the whole row under ``full``), d_attn = heads x head_dim.
"""

from __future__ import annotations

import os
import warnings

from torch import nn

from anchor_lightning.errors import RunWarning, UserError

PEAK_ENV = "ANCHOR_PEAK_TFLOPS"  # the one place a user gives the card's dense bf16 peak, in TFLOP/s
# dense bf16 peaks by the vendor's datasheets, most specific name first (torch.cuda.get_device_name)
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H200 NVL", 835e12),
    ("GH200", 989e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
)
_warned: set[str] = set()


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
    """The card's dense bf16 peak in FLOP/s: ``$ANCHOR_PEAK_TFLOPS`` when set, else the datasheet value of a
    known card (by name); None (no MFU, said once) for a card not in the table."""
    given = os.environ.get(PEAK_ENV)
    if given:
        try:
            return float(given) * 1e12
        except ValueError:
            raise UserError(f"{given!r} is not a number of TFLOP/s", field=PEAK_ENV) from None
    peak = next((value for key, value in PEAK_BF16_FLOPS if key in device_name), None)
    if peak is None and device_name not in _warned:
        _warned.add(device_name)
        warnings.warn(
            f"no dense bf16 peak known for {device_name!r}: set {PEAK_ENV} (TFLOP/s) to get MFU",
            category=RunWarning,
            stacklevel=2,
        )
    return peak
