"""FLOPs per token of a benchmark row by docs/design.md's FLOPs rule (see ``anchor_lightning.model.flops``)."""

from __future__ import annotations

import numpy as np
from torch import nn

from anchor_lightning.data.packing import PAD_DOC, SHARED_ANCHOR_DOC
from anchor_lightning.model.flops import attention_width, batch_flops, matmul_parameters


def attention_pairs_of(doc_ids: np.ndarray, mode: str | None) -> int:
    """sum(d_i ** 2): one span per document id (the shared anchor column added to each), or the whole
    row for ``full`` attention (``mode`` None means the documents as given)."""
    real = doc_ids[doc_ids != PAD_DOC]
    if mode == "full":
        return len(real) ** 2
    anchors = int((real == SHARED_ANCHOR_DOC).sum())
    spans = np.unique(real[real >= 0], return_counts=True)[1] + anchors
    return int((spans.astype(np.int64) ** 2).sum()) + anchors


def flops_per_token(model: nn.Module, doc_ids: np.ndarray, mode: str | None) -> float:
    config = getattr(model, "lm", model).config
    layers, d_attn = attention_width(config)
    tokens = int((doc_ids != PAD_DOC).sum())
    return batch_flops(matmul_parameters(model), layers, d_attn, tokens, attention_pairs_of(doc_ids, mode)) / tokens
