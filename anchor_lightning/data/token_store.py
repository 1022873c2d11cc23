"""Tokenized documents on disk: the first stage of preparing a corpus, written once per source (its
fingerprint is the key) and memory-mapped after, so packing (at any row length, layout or held-out
share) never tokenizes again and never holds the corpus in memory.

An entry ``<cache_dir>/tokens-<key>/`` holds ``tokens.bin`` (int32, every document's ids end to end),
``offsets.bin`` (int64, where each document starts, one more for the end), ``tags.bin`` (int32 index of
each document's tag into ``meta.json``'s ``tags``, +Tag corpora only) and ``meta.json`` (counts, the
source, how many documents open with each first token). It is written under a temporary name and
renamed (``paths.atomic_directory``): an interrupted preparation leaves nothing that looks whole.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from anchor_lightning.errors import UserError
from anchor_lightning.messages import Progress
from anchor_lightning.paths import atomic_directory

FORMAT_VERSION = 1
FLUSH_TOKENS = 1 << 22  # tokens buffered before a write (16 MiB of int32)
READ_TOKENS = 1 << 22  # tokens read at once when streaming documents back
FIRST_TOKENS_KEPT = 64  # the most common opening ids recorded (the foreign-BOS check reads them)


def store_key(fingerprint: str) -> str:
    return hashlib.sha256(json.dumps({"format": FORMAT_VERSION, "source": fingerprint}).encode()).hexdigest()[:20]


class TokenStore:
    """A written entry, memory-mapped: ``len(store)`` documents, ``store.document(i)`` a view of one."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "meta.json").read_text())
        self.offsets = np.memmap(self.directory / "offsets.bin", dtype=np.int64, mode="r")
        tokens = self.meta["tokens"]
        self.tokens = (
            np.memmap(self.directory / "tokens.bin", dtype=np.int32, mode="r", shape=(tokens,))
            if tokens
            else np.zeros(0, dtype=np.int32)
        )
        tags_file = self.directory / "tags.bin"
        self.tag_index = np.memmap(tags_file, dtype=np.int32, mode="r") if tags_file.is_file() and len(self) else None
        self.tag_names: list[str] = self.meta.get("tags") or []

    def __len__(self) -> int:
        return self.meta["documents"]

    def document(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def documents(self, positions: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """The documents at ``positions`` (increasing; all when None), in order, read from the file a
        block at a time: unlike walking the memory map, this leaves no mapped pages behind, so the
        process's resident memory stays at one block however large the corpus."""
        order = range(len(self)) if positions is None else positions
        start = end = 0
        block = np.zeros(0, dtype=np.int32)
        with (self.directory / "tokens.bin").open("rb") as f:
            for i in order:
                lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
                if lo < start or hi > end:
                    start, end = lo, max(hi, lo + READ_TOKENS)
                    f.seek(start * 4)
                    block = np.fromfile(f, dtype=np.int32, count=end - start)
                    end = start + len(block)
                yield block[lo - start : hi - start]

    def tag(self, i: int) -> str | None:
        return self.tag_names[self.tag_index[i]] if self.tag_index is not None else None

    @property
    def first_tokens(self) -> Counter:
        """How many documents open with each id (the most common ones)."""
        return Counter({int(k): v for k, v in self.meta["first_tokens"].items()})


def write_store(
    directory: Path,
    documents: Iterable[tuple[np.ndarray, str | None]],
    description: str,
    position: Callable[[], tuple[int, int]] | None = None,
) -> TokenStore:
    """Stream ``documents`` into a new entry at ``directory`` and return it memory-mapped. Progress
    (documents, tokens, tokens/s, the share of the file read, ETA) is printed every few seconds."""
    progress = Progress(f"tokenizing {description}", position)
    with atomic_directory(directory) as tmp:
        files = {name: (tmp / f"{name}.bin").open("wb") for name in ("tokens", "offsets", "tags")}
        tag_ids: dict[str, int] = {}
        first: Counter[int] = Counter()
        buffer: list[np.ndarray] = []
        starts: list[int] = []
        tags: list[int] = []
        buffered = total = count = 0

        def flush() -> None:
            if buffer:
                files["tokens"].write(np.concatenate(buffer).astype(np.int32, copy=False).tobytes())
            files["offsets"].write(np.asarray(starts, dtype=np.int64).tobytes())
            files["tags"].write(np.asarray(tags, dtype=np.int32).tobytes())
            buffer.clear()
            starts.clear()
            tags.clear()

        for ids, tag in documents:
            ids = np.asarray(ids)
            starts.append(total)
            buffer.append(ids)
            buffered += len(ids)
            total += len(ids)
            count += 1
            if len(ids):
                first[int(ids[0])] += 1
            if tag is not None:
                tags.append(tag_ids.setdefault(tag, len(tag_ids)))
            if buffered >= FLUSH_TOKENS:
                flush()
                buffered = 0
            progress.update(count, total)
        starts.append(total)  # the end of the last document
        flush()
        for f in files.values():
            f.close()
        if not count:
            raise UserError("the data set is empty", file=description)
        if not tag_ids:
            (tmp / "tags.bin").unlink()
        meta = {
            "format": FORMAT_VERSION,
            "source": description,
            "documents": count,
            "tokens": total,
            "tags": sorted(tag_ids, key=lambda name: tag_ids[name]) or None,
            "first_tokens": {str(k): v for k, v in first.most_common(FIRST_TOKENS_KEPT)},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    progress.close(count, total)
    return TokenStore(directory)
