"""Document lengths for benchmarks: a named parametric distribution, or a JSONL corpus's real lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from anchor_lightning.errors import UserError


def document_lengths(source: str, total: int, seed: int = 1) -> list[int]:
    """Lengths (tokens, first token included) adding up to at least ``total``.

    ``exponential:MEAN:MIN:MAX`` draws from an exponential distribution with a torch Generator seeded
    with ``seed`` (the peer tables of docs/results.md: ``exponential:1500:64:16384``, seed 1); a path to a JSONL file
    repeats that corpus's document lengths in order (pre-tokenized rows split by ``source``)."""
    if source.startswith("exponential:"):
        mean, low, high = (float(x) for x in source.split(":")[1:])
        generator = torch.Generator().manual_seed(seed)
        lengths: list[int] = []
        while sum(lengths) < total:
            draw = torch.empty(1024).exponential_(1.0 / mean, generator=generator).clamp(low, high)
            lengths += draw.long().tolist()
        return _cut(lengths, total)
    path = Path(source)
    if not path.is_file():
        raise UserError("expected exponential:MEAN:MIN:MAX or a JSONL corpus", file=source, field="--documents")
    from anchor_lightning.data.formats import read_token_documents

    corpus = [len(d) for d in read_token_documents(path).token_ids]
    repeats = -(-total // sum(corpus))
    return _cut(corpus * repeats, total)


def _cut(lengths: list[int], total: int) -> list[int]:
    out, running = [], 0
    for n in lengths:
        out.append(int(n))
        running += n
        if running >= total:
            break
    return out


def lengths_summary(lengths: list[int]) -> str:
    a = np.asarray(lengths)
    return f"{len(a)} documents, mean {a.mean():.0f}, median {np.median(a):.0f}, max {a.max()}"
