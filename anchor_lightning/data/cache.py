"""Packed rows on disk: written once per key (everything that changes them), memory-mapped after.

A cache entry is a directory ``<cache_dir>/<key>/`` with raw arrays (``input_ids.bin``, ``doc_ids.bin``,
``is_first.bin``, ``is_tag.bin``, ``chunk_sources.bin``), per-row ``chunk_offsets``, ``targets`` and ``tokens``,
and ``meta.json`` (shapes, packing statistics, the key's parts). It is written under a temporary
name and renamed, so an interrupted write never leaves a half entry behind (and the temporary
directory of a writer that was killed is removed by the next writer of the same entry on that host).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anchor_lightning.data.packing import IGNORE_INDEX, PAD_DOC, PackedRow, PackStats, shifted_labels
from anchor_lightning.paths import atomic_directory

FORMAT_VERSION = 2


def cache_key(parts: dict) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class PackedRows:
    """All rows of one packed data set, memory-mapped; ``row(i)`` gives a :class:`PackedRow`."""

    input_ids: np.ndarray  # int32 [R, T]
    doc_ids: np.ndarray  # int32 [R, T]
    is_first: np.ndarray  # bool [R, T]
    is_tag: np.ndarray  # bool [R, T]
    chunk_sources: np.ndarray  # int64 [C, 2]
    chunk_offsets: np.ndarray  # int64 [R + 1]
    targets: np.ndarray  # int64 [R] labelled slots per row
    tokens: np.ndarray  # int64 [R] non-padding slots per row
    stats: dict
    max_token_id: int = -1
    directory: Path | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def row(self, i: int) -> PackedRow:
        lo, hi = self.chunk_offsets[i], self.chunk_offsets[i + 1]
        is_tag = np.asarray(self.is_tag[i])
        return PackedRow(
            np.asarray(self.input_ids[i]),
            np.asarray(self.doc_ids[i]),
            np.asarray(self.is_first[i]),
            np.asarray(self.chunk_sources[lo:hi]),
            is_tag if is_tag.any() else None,
        )


_ARRAYS = {
    "input_ids": np.int32,
    "doc_ids": np.int32,
    "is_first": np.bool_,
    "is_tag": np.bool_,
    "chunk_sources": np.int64,
    "chunk_offsets": np.int64,
    "targets": np.int64,
    "tokens": np.int64,
}


def write_rows(directory: Path, rows: Iterable[PackedRow], stats: PackStats, parts: dict) -> PackedRows:
    """Stream rows to ``directory`` (atomically) and return them memory-mapped."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        files = {name: open(tmp / f"{name}.bin", "wb") for name in _ARRAYS}
        offsets, targets, tokens, seq_len, max_id = [0], [], [], 0, -1
        for row in rows:
            seq_len = len(row.input_ids)
            max_id = max(max_id, int(row.input_ids.max()))
            files["input_ids"].write(row.input_ids.astype(np.int32).tobytes())
            files["doc_ids"].write(row.doc_ids.astype(np.int32).tobytes())
            files["is_first"].write(row.is_first.astype(np.bool_).tobytes())
            is_tag = row.is_tag if row.is_tag is not None else np.zeros_like(row.is_first)
            files["is_tag"].write(is_tag.astype(np.bool_).tobytes())
            files["chunk_sources"].write(row.chunk_sources.astype(np.int64).tobytes())
            offsets.append(offsets[-1] + len(row.chunk_sources))
            labels = shifted_labels(row.input_ids, row.doc_ids, row.is_prefix)
            targets.append(int((labels != IGNORE_INDEX).sum()))
            tokens.append(int((row.doc_ids != PAD_DOC).sum()))
        for name, values in (("chunk_offsets", offsets), ("targets", targets), ("tokens", tokens)):
            files[name].write(np.asarray(values, dtype=np.int64).tobytes())
        for f in files.values():
            f.close()
        meta = {
            "rows": len(targets),
            "seq_len": seq_len,
            "chunks": offsets[-1],
            "max_token_id": max_id,
            "stats": stats.as_dict(),
            "key": parts,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    return load_rows(directory)


def load_rows(directory: Path) -> PackedRows:
    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text())
    r, t, c = meta["rows"], meta["seq_len"], meta["chunks"]
    shapes = {
        "input_ids": (r, t),
        "doc_ids": (r, t),
        "is_first": (r, t),
        "is_tag": (r, t),
        "chunk_sources": (c, 2),
        "chunk_offsets": (r + 1,),
        "targets": (r,),
        "tokens": (r,),
    }
    arrays = {}
    for name, dtype in _ARRAYS.items():
        path = directory / f"{name}.bin"
        empty = int(np.prod(shapes[name])) == 0
        arrays[name] = (
            np.zeros(shapes[name], dtype) if empty else np.memmap(path, dtype=dtype, mode="r", shape=shapes[name])
        )
    return PackedRows(**arrays, stats=meta["stats"], max_token_id=meta["max_token_id"], directory=directory)
