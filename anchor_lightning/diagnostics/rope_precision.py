"""How far BF16 RoPE is from purely relative: the paper's D(X, a, b), its per-token variant and D_logit.

Run the same sequence twice, with positions ``[a, ..., a+L-1]`` and ``[b, ..., b+L-1]`` (both as the
two rows of one batch). RoPE is relative, so in exact arithmetic every attention matrix is the same.

    D(X, a, b) = sum over layers l, heads h, i, j <= i of |A_a[l,h,i,j] - A_b[l,h,i,j]| / (L - j)

(0-indexed j: key column j has L - j unmasked entries). Holding every layer's attention matrices is
impossible at long lengths, so a registered attention function (``anchor_diag``) reduces D layer by
layer, a block of queries at a time, while the forward pass itself runs through ordinary SDPA.

It also reports, per key column j, ``D_j`` (the per-token variant: D = sum_j D_j, so D_0 / D is the
first token's share), ``D_logit`` (mean over queries of the summed |pre-softmax score on the first key|
differences), D over content-to-content entries only (rows and columns from 1), and the largest
difference of the first token's K and V and hidden states between the two rows.

Anchor rule (``anchor=True``): the first token stays at position 0 in both rows and only the content
moves (``[0, a+1, ..., a+L-1]``), as AnchorAttention trains it: the first token's K, V and hidden
states are then identical across offsets. (Its attention values are not comparable across offsets:
the content's distance to the anchor changes by b - a, in exact arithmetic too.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface

KWARG = "rope_diagnostic"
IMPLEMENTATION = "anchor_diag"
BLOCK_ELEMENTS = 1 << 26  # score entries per query block (x 4 bytes x a few buffers)


@dataclass
class Deviation:
    """What one two-row forward pass measured (summed over layers and heads)."""

    length: int
    d: float = 0.0
    d_content: float = 0.0
    d_logit: float = 0.0
    per_token: torch.Tensor | None = None  # [L] float64: D_j
    first_kv_diff: float = 0.0  # max |K_a - K_b|, |V_a - V_b| at slot 0 over layers
    layers: list[float] = field(default_factory=list)  # D of each layer

    def add_layer(self, d_layer: float) -> None:
        self.layers.append(d_layer)


def _deviation(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """Causal attention computed a block of queries at a time, adding the layer's terms to ``kwargs[KWARG]``."""
    out = accumulate(kwargs[KWARG], query, key, value, scaling if scaling is not None else query.shape[-1] ** -0.5)
    return out.transpose(1, 2).contiguous(), None


@torch.no_grad()
def accumulate(
    record: Deviation, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
) -> torch.Tensor:
    """Add one layer's D terms and return its attention output [2, heads, L, dim].

    query/key/value [2, heads, L, dim] (GQA: fewer key heads), rows = offsets a, b. Memory stays at one
    block of scores: the output is computed from the same blocks (at 16K a full fp32 score matrix of a
    1B model's layer would need 64 GiB)."""
    _, heads, length, dim = query.shape
    groups = heads // key.shape[1]
    q = query.reshape(2, key.shape[1], groups, length, dim)
    k, v = key[:, :, None], value[:, :, None]  # broadcast over the group: no repeated K/V heads
    out = torch.empty_like(q)
    weights = 1.0 / (length - torch.arange(length, device=query.device, dtype=torch.float64))
    if record.per_token is None:
        record.per_token = torch.zeros(length, dtype=torch.float64, device=query.device)
    block = max(1, BLOCK_ELEMENTS // (heads * length))
    layer_d = torch.zeros((), dtype=torch.float64, device=query.device)
    for start in range(0, length, block):
        stop = min(length, start + block)
        scores = (q[:, :, :, start:stop] @ k[:, :, :, :stop].transpose(-1, -2)) * scale  # model dtype
        rows = torch.arange(start, stop, device=query.device)[:, None]
        cols = torch.arange(stop, device=query.device)[None, :]
        future = cols > rows
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))  # softmax in fp32 (fp64 stays)
        record.d_logit += (scores[0, ..., 0] - scores[1, ..., 0]).abs().sum().item() / length
        probs = scores.masked_fill(future, float("-inf")).softmax(-1)
        out[:, :, :, start:stop] = probs.to(v.dtype) @ v[:, :, :, :stop]
        delta = (probs[0] - probs[1]).abs().double()  # [kv heads, groups, block, stop]
        per_column = delta.sum(dim=(0, 1, 2)) * weights[:stop]
        record.per_token[:stop] += per_column
        layer_d += per_column.sum()
        content = delta[..., 1:].sum(dim=(0, 1, 2))  # key columns from 1 (query row 0 sees only column 0)
        record.d_content += (content * weights[1:stop]).sum().item()
    record.d += layer_d.item()
    record.add_layer(layer_d.item())
    for tensor in (key, value):
        record.first_kv_diff = max(record.first_kv_diff, (tensor[0, :, 0] - tensor[1, :, 0]).abs().max().item())
    return out.reshape(2, heads, length, dim)


AttentionInterface.register(IMPLEMENTATION, _deviation)


def offset_positions(length: int, offset: int, anchor: bool) -> torch.Tensor:
    """[offset, ..., offset+L-1], or with the anchor rule [0, offset+1, ..., offset+L-1]."""
    positions = torch.arange(length) + offset
    if anchor:
        positions[0] = 0
    return positions


@torch.no_grad()
def measure(model, input_ids: torch.Tensor, a: int, b: int, anchor: bool = False) -> tuple[Deviation, float]:
    """D and friends of one sequence ``input_ids`` [L] at offsets a and b; also the largest difference of
    the first token's hidden states (every layer) between the two rows."""
    length = input_ids.shape[-1]
    device = next(model.parameters()).device
    ids = input_ids.to(device)[None].expand(2, -1)
    positions = torch.stack([offset_positions(length, a, anchor), offset_positions(length, b, anchor)]).to(device)
    record = Deviation(length)
    previous = model.config._attn_implementation
    model.set_attn_implementation(IMPLEMENTATION)
    try:
        out = model.base_model(
            input_ids=ids, position_ids=positions, output_hidden_states=True, use_cache=False, **{KWARG: record}
        )
    finally:
        model.set_attn_implementation(previous)
    first_hidden = max((h[0, 0] - h[1, 0]).abs().max().item() for h in out.hidden_states)
    assert record.per_token is not None  # the recorder saw the layers
    record.per_token = record.per_token.cpu()
    return record, first_hidden
