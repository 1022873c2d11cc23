"""Rows to a batch: the one contract every attention backend consumes (docs/design.md, "The batch contract").

A batch is a :class:`Batch` (a typed dict; its fields below). ``step_targets`` is the loss normaliser:
the sampler knows every rank's rows of a step in advance, so the global count needs no communication
(see :mod:`anchor_lightning.data.sampler`). ``mode`` and ``layout`` say how the rows were packed, so
:func:`anchor_lightning.attention.backends.prepare` builds a backend's inputs from the batch alone and
refuses a layout the backend cannot run; the module checks them against its own at setup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict, cast

import numpy as np
import torch

from anchor_lightning.data.packing import (
    IGNORE_INDEX,
    PAD_DOC,
    PackedRow,
    attention_pairs,
    check_mode_layout,
    position_ids,
    segment_lengths,
    shifted_labels,
)


class Batch(TypedDict):
    input_ids: torch.Tensor  # int64 [B, T] token ids
    labels: torch.Tensor  # int64 [B, T] pre-shifted targets, -100 where nothing is learned
    position_ids: torch.Tensor  # int64 [B, T] RoPE positions (they depend on the mode)
    doc_ids: torch.Tensor  # int32 [B, T] packed-document index per slot (-1 shared anchor, -2 padding)
    is_first: torch.Tensor  # bool [B, T] first-token (anchor / BOS) slots
    cu_seqlens: torch.Tensor  # int32 [S + 1] attention segment boundaries over the flattened B*T slots
    max_seqlen: int  # longest segment (computed here, never by a device sync)
    rows: list[int]  # each row's index in the packed data set (for audits and error messages)
    num_targets: int  # labelled slots in this batch
    num_tokens: int  # non-padding slots in this batch
    num_docs: int  # packed documents in this batch
    attention_pairs: int  # sum of squared attention spans (the FLOPs rule)
    step_targets: int  # labelled slots of the whole optimizer step, all ranks
    step_tokens: int  # non-padding slots of the whole optimizer step, all ranks
    mode: str  # how the rows were packed
    layout: str


def collate_rows(
    rows: Sequence[PackedRow],
    mode: str,
    layout: str,
    row_ids: Sequence[int] | None = None,
    step_targets: int | None = None,
    step_tokens: int | None = None,
) -> Batch:
    """Stack rows into a batch. Without ``step_targets``/``step_tokens`` the batch is its own step."""
    check_mode_layout(mode, layout)
    if not rows:
        raise ValueError("cannot collate an empty list of rows")
    input_ids = np.stack([r.input_ids for r in rows]).astype(np.int64)
    doc_ids = np.stack([r.doc_ids for r in rows])
    is_first = np.stack([r.is_first for r in rows])
    labels = np.stack([shifted_labels(r.input_ids, r.doc_ids, r.is_prefix) for r in rows])
    positions = np.stack([position_ids(r.doc_ids, r.is_first, mode) for r in rows])
    segments = np.concatenate([segment_lengths(r.doc_ids, mode) for r in rows])
    cu_seqlens = np.zeros(len(segments) + 1, dtype=np.int32)
    np.cumsum(segments, out=cu_seqlens[1:])
    num_targets = int((labels != IGNORE_INDEX).sum())
    num_tokens = int((doc_ids != PAD_DOC).sum())
    row_list = list(row_ids) if row_ids is not None else list(range(len(rows)))
    return {
        "input_ids": torch.from_numpy(input_ids),
        "labels": torch.from_numpy(labels),
        "position_ids": torch.from_numpy(positions),
        "doc_ids": torch.from_numpy(doc_ids.astype(np.int32)),
        "is_first": torch.from_numpy(is_first),
        "cu_seqlens": torch.from_numpy(cu_seqlens),
        "max_seqlen": int(segments.max()),
        "rows": [int(r) for r in row_list],
        "num_targets": num_targets,
        "num_tokens": num_tokens,
        "num_docs": sum(len(r.chunk_sources) for r in rows),
        "attention_pairs": sum(attention_pairs(r.doc_ids, mode, layout) for r in rows),
        "step_targets": num_targets if step_targets is None else int(step_targets),
        "step_tokens": num_tokens if step_tokens is None else int(step_tokens),
        "mode": mode,
        "layout": layout,
    }


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch with its tensors on ``device`` (what Lightning's transfer does in ``fit``; the
    benchmarks call it themselves)."""
    moved = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    return cast(Batch, moved)
