"""Sources: what ``data.train`` / ``data.val`` name (a file, a saved ``datasets`` directory or hub name,
or the embedded default corpus) turned into a stream of token-id documents, with a fingerprint of
everything that decides their ids (the key of the caches), known before any tokenization. Text is
tokenized on the way, a batch at a time. The file formats themselves are read by ``formats.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anchor_lightning.data.default_corpus import generate_documents
from anchor_lightning.data.formats import (
    TEXT_BATCH,
    Document,
    Documents,
    FileReader,
    dataset_records,
    dataset_rows,
    detect_format,
    iter_texts,
    iter_token_documents,
)
from anchor_lightning.data.tokenizer import Tokenizer
from anchor_lightning.errors import UserError
from anchor_lightning.paths import file_sha256

FORMATS = ("auto", "text", "tokenized", "datasets")
DEFAULT_SOURCE = "default"


@dataclass
class DocumentSource:
    """Where documents come from: a fingerprint of everything that decides their token ids (the key of
    the caches), known before any tokenization, and ``documents()`` to stream them in order."""

    fingerprint: str
    description: str
    documents: Callable[[], Iterator[Document]]
    pretokenized: bool = False  # token ids read as given (their documents may open with another BOS)
    size: Callable[[], tuple[int, int]] | None = None  # (bytes read so far, total bytes): progress

    def load(self) -> Documents:
        """Every document in memory (for small corpora)."""
        ids, tags = [], []
        for tokens, tag in self.documents():
            ids.append(tokens)
            tags.append(tag)
        if not ids:
            raise UserError("the data set is empty", file=self.description)
        return Documents(ids, tags if any(t is not None for t in tags) else None)


def encoded(
    texts: Iterable[tuple[str, str | None]], tokenizer: Tokenizer, append_eos: bool, eos_id: int | None = None
) -> Iterator[Document]:
    """Token ids of each (text, tag), a batch of texts at a time; each text ends with ``eos_id``
    (default: the tokenizer's EOS) when ``append_eos``."""
    eos_id = tokenizer.eos_token_id if eos_id is None else eos_id
    tail = np.asarray([eos_id] if append_eos and eos_id is not None else [], dtype=np.int64)
    batch: list[tuple[str, str | None]] = []

    arrays = getattr(tokenizer, "encode_arrays", None)

    def flush():
        texts = [t for t, _ in batch]
        for ids, (_, tag) in zip(arrays(texts) if arrays else tokenizer.encode_batch(texts), batch):
            ids = np.asarray(ids, dtype=np.int64)
            yield (np.concatenate([ids, tail]) if len(tail) else ids), tag

    for item in texts:
        batch.append(item)
        if len(batch) == TEXT_BATCH:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def tokenize(texts: list[str], tokenizer: Tokenizer, append_eos: bool, eos_id: int | None = None) -> list[np.ndarray]:
    """Token ids of each text (in memory: small corpora)."""
    return [ids for ids, _ in encoded(((t, None) for t in texts), tokenizer, append_eos, eos_id)]


def default_corpus_size(source: str) -> int:
    """``default`` is 400 generated documents; ``default:N`` is N of them (for long rows and speed runs)."""
    _, _, count = source.partition(":")
    if not count:
        return 400
    if not count.isdigit() or int(count) < 1:
        raise UserError(f"'default:N' needs a positive number of documents, got {source!r}", field="data.train")
    return int(count)


def open_source(
    source: str,
    tokenizer: Tokenizer,
    *,
    data_format: str = "auto",
    text_field: str = "text",
    append_eos: bool = True,
    split: str = "train",
    tag_field: str | None = None,
    eos_id: int | None = None,
) -> DocumentSource:
    """Documents as token-id arrays from ``source`` (a path, a hub name, or ``"default"``)."""
    if data_format not in FORMATS:
        raise UserError(f"unknown format {data_format!r} (choose from {', '.join(FORMATS)})", field="data.format")
    text_key = f"{tokenizer.fingerprint}/eos={append_eos}/tags={tag_field}" + (
        f"/eos_id={eos_id}" if eos_id is not None else ""
    )

    def encode(texts: Iterable[tuple[str, str | None]]) -> Iterator[Document]:
        return encoded(texts, tokenizer, append_eos, eos_id)

    if source == DEFAULT_SOURCE or source.startswith(f"{DEFAULT_SOURCE}:"):
        count = default_corpus_size(source)
        if tag_field is not None:
            raise UserError("the embedded default corpus has no tags", field="data.tag_field")
        return DocumentSource(
            f"default-v1/{count}/{text_key}",
            f"embedded default corpus ({count} documents)",
            lambda: encode((text, None) for text in generate_documents(count)),
        )
    path = Path(source)
    if data_format == "auto":
        if path.exists():
            data_format = detect_format(path)
        elif "/" in source and not source.endswith((".jsonl", ".json", ".gz", ".zst", ".parquet")):
            data_format = "datasets"  # a hub name such as org/name
        else:
            raise UserError("no such file", file=source)
    if data_format in ("tokenized", "text") and not path.is_file():
        raise UserError("no such file", file=source)
    if data_format in ("tokenized", "text"):
        reader = FileReader(path)
        digest = file_sha256(path)[:16]
        size = None if path.suffix.lower() == ".parquet" else reader.position
        if data_format == "tokenized":
            return DocumentSource(
                f"tokenized/{digest}/tags={tag_field}",
                f"pre-tokenized {path}",
                lambda: iter_token_documents(path, tag_field, reader),
                pretokenized=True,
                size=size,
            )
        return DocumentSource(
            f"text/{digest}/{text_field}/{text_key}",
            f"text {path}",
            lambda: encode(iter_texts(path, text_field, tag_field, reader)),
            size=size,
        )
    records = dataset_records(source, split)
    if len(records) == 0:
        raise UserError("the data set is empty", file=source)
    if tag_field is not None and tag_field not in records.column_names:
        raise UserError(f"no column {tag_field!r} for tags", file=source, field="data.tag_field")
    if "input_ids" in records.column_names:

        def token_rows() -> Iterator[Document]:
            for ids, tag in dataset_rows(records, "input_ids", tag_field):
                yield np.asarray(ids, dtype=np.int64), tag

        return DocumentSource(
            f"datasets/{records._fingerprint}/tags={tag_field}", f"datasets {source}", token_rows, pretokenized=True
        )
    if text_field not in records.column_names:
        raise UserError(
            f"no column {text_field!r} or 'input_ids' (has {', '.join(records.column_names)})",
            file=source,
            field=text_field,
        )
    return DocumentSource(
        f"datasets/{records._fingerprint}/{text_field}/{text_key}",
        f"datasets {source}",
        lambda: encode(dataset_rows(records, text_field, tag_field)),
    )
