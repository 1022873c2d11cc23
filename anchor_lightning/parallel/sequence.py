"""Ulysses sequence parallelism: a row's slots are split over the ranks of a group; around attention an
all-to-all trades the sequence split for a head split, so every rank attends over the whole row for
its share of heads and the batch contract's boundaries (``cu_seqlens``, masks) apply unchanged.

::

    rank r holds slots [r T/P, (r+1) T/P) of every head      q, k, v  [B, H, T/P, D]
        -- all-to-all (seq -> heads) -->                                [B, H/P, T, D]
    attention over the whole row for heads [r H/P, (r+1) H/P)
        -- all-to-all (heads -> seq) -->                                [B, H, T/P, D]

Grouped-query attention: query heads and key/value heads are split into P contiguous blocks, which
keeps every query head with its key/value head; when the key/value heads do not divide by P they are
replicated up to the query heads first.

The all-to-all is a small autograd Function around ``dist.all_to_all_single`` (its backward is the
opposite all-to-all): ``torch.distributed.nn.functional.all_to_all_single`` was seen to abort at
process exit on gloo.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from anchor_lightning.errors import UserError


def _exchange(x: torch.Tensor, group) -> torch.Tensor:
    """all_to_all_single over dim 0 (one block per rank). Both buffers must be contiguous: empty_like of a
    permuted view would keep its strides, and the collective writes memory in order."""
    x = x.contiguous()
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def _seq_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    """[B, H, T/P, D] (my slots, all heads) -> [B, H/P, T, D] (all slots, my heads)."""
    p = dist.get_world_size(group)
    b, h, t, d = x.shape
    blocks = x.reshape(b, p, h // p, t, d).permute(1, 0, 2, 3, 4)  # block i: heads for rank i
    received = _exchange(blocks, group)  # block i: my heads, slots of rank i
    return received.permute(1, 2, 0, 3, 4).reshape(b, h // p, p * t, d)


def _heads_to_seq(x: torch.Tensor, group) -> torch.Tensor:
    """[B, H/P, T, D] (all slots, my heads) -> [B, H, T/P, D] (my slots, all heads)."""
    p = dist.get_world_size(group)
    b, h, t, d = x.shape
    blocks = x.reshape(b, h, p, t // p, d).permute(2, 0, 1, 3, 4)  # block i: slots of rank i
    received = _exchange(blocks, group)  # block i: heads of rank i, my slots
    return received.permute(1, 0, 2, 3, 4).reshape(b, p * h, t // p, d)


class _AllToAll(torch.autograd.Function):
    """seq -> heads (``to_heads``) or heads -> seq; the backward pass is the opposite exchange."""

    @staticmethod
    def forward(ctx, x, group, to_heads: bool):
        ctx.group, ctx.to_heads = group, to_heads
        return (_seq_to_heads if to_heads else _heads_to_seq)(x, group)

    @staticmethod
    def backward(ctx, grad):
        return (_heads_to_seq if ctx.to_heads else _seq_to_heads)(grad, ctx.group), None, None


def seq_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    return _AllToAll.apply(x, group, True)


def heads_to_seq(x: torch.Tensor, group) -> torch.Tensor:
    return _AllToAll.apply(x, group, False)


def scatter_heads(query, key, value, group):
    """q, k, v of my slots [B, H, T/P, D] -> of the whole row for my heads [B, H/P, T, D]."""
    p = dist.get_world_size(group)
    if query.shape[1] % p:
        raise UserError(
            f"{query.shape[1]} attention heads cannot be split over {p} sequence-parallel ranks",
            field="trainer.strategy.init_args.sequence_parallel_size",
        )
    if key.shape[1] % p:  # replicate key/value heads up to the query heads
        repeat = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
    return seq_to_heads(query, group), seq_to_heads(key, group), seq_to_heads(value, group)


def local_slots(seq_len: int, group) -> slice:
    """The slots this rank holds."""
    p, r = dist.get_world_size(group), dist.get_rank(group)
    if seq_len % p:
        raise UserError(f"the row length {seq_len} is not divisible by {p} sequence-parallel ranks", field="seq_len")
    width = seq_len // p
    return slice(r * width, (r + 1) * width)
