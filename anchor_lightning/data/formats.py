"""File formats, read one document at a time: JSONL text, pre-tokenized JSONL (the paper's data-release
format), either gzip- or zstd-compressed, Parquet, and saved ``datasets`` directories or hub names.
Nothing here holds more than one batch of documents: a corpus of billions of tokens streams through in
bounded memory. Bad input raises a :class:`UserError` naming the file, the line and the field, wherever
in the file it is. (``sources.py`` turns a configured source into documents of token ids with a
fingerprint; this module only reads files.)

Pre-tokenized rows look like ``{"input_ids": [...], "source": [{"start": s, "end": e, "domain": d}]}``:
each ``source`` entry is one document ``input_ids[start:end]`` (``start`` defaults to the previous
end); without ``source`` the whole row is one document. Tokens outside every span are counted and
reported, never trained on.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from anchor_lightning.errors import RunWarning, UserError

MAX_TOKEN_ID = 2**31 - 1  # rows store ids as int32
TEXT_BATCH = 1000  # texts tokenized at once (the fast tokenizers spread a batch over all cores)
UNSUPPORTED = {
    ".arrow": "Arrow",
    ".bz2": "bzip2-compressed",
    ".xz": "xz-compressed",
    ".csv": "CSV",
    ".txt": "plain text",  # read as JSONL it would stop at its first line as "malformed JSON"
}

# one document as the readers yield it: its token ids and, with a tag field, its tag text
Document = tuple[np.ndarray, "str | None"]


@dataclass
class Documents:
    """Token-id documents held in memory (small corpora: the evaluation tools, tests), and each one's
    tag text (the +Tag variant) when a tag field is configured."""

    token_ids: list[np.ndarray]
    tags: list[str | None] | None = None


class FileReader:
    """A file's raw bytes with the position read so far (the progress of a streamed preparation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total = path.stat().st_size
        self.raw: BinaryIO | None = None

    def position(self) -> tuple[int, int]:
        raw = self.raw
        try:
            return (raw.tell() if raw is not None and not raw.closed else 0), self.total
        except (OSError, ValueError):
            return 0, self.total

    def lines(self) -> Iterator[bytes]:
        """The file's lines (``.gz`` and ``.zst`` decompressed on the fly)."""
        suffix = self.path.suffix.lower()
        kind = UNSUPPORTED.get(suffix)
        if kind is not None:
            raise UserError(
                f"unsupported format: {kind} files are not read (JSONL, .jsonl.gz, .jsonl.zst, Parquet or a "
                "saved datasets directory are)",
                file=str(self.path),
            )
        with self.path.open("rb") as raw:
            self.raw = raw
            if suffix == ".gz":
                import gzip

                yield from gzip.GzipFile(fileobj=raw, mode="rb")
            elif suffix == ".zst":
                yield from _lines(_zstd_chunks(raw, self.path))
            else:
                yield from raw


def _zstd_chunks(raw, path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The decompressed bytes of a zstd file, frame after frame; a file that ends inside a frame (an
    interrupted download or copy) is refused, where zstandard's stream reader would just stop."""
    try:
        import zstandard
    except ImportError:
        raise UserError("reading .zst files needs the zstandard package", file=str(path)) from None
    decompressor = zstandard.ZstdDecompressor()
    frame, inside = decompressor.decompressobj(), False
    while chunk := raw.read(size):
        while chunk:
            inside = True
            out = frame.decompress(chunk)
            if out:
                yield out
            chunk = b""
            if frame.eof:  # the frame is whole: what follows it starts the next one
                chunk, frame, inside = frame.unused_data, decompressor.decompressobj(), False
    if inside:
        raise UserError(
            "not a readable compressed file (the zstd stream ends inside a frame: the file is truncated)",
            file=str(path),
        )


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines (with their newline) of a stream of byte chunks."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line + b"\n"
    if pending:
        yield pending


def _iter_json_lines(path: Path, reader: FileReader | None = None) -> Iterator[tuple[int, dict, bytes]]:
    """(line number, record, raw line) of every non-blank line; malformed lines named."""
    if path.is_dir():
        raise UserError("a directory, not a JSONL file", file=str(path))
    if not path.is_file():
        raise UserError("no such file", file=str(path))
    import gzip
    import zlib

    reader = reader or FileReader(path)
    try:
        for number, raw in enumerate(reader.lines(), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as err:  # its column: where in the line the JSON breaks
                raise UserError(
                    f"malformed JSON ({err.msg}, column {err.colno})", file=str(path), line=number
                ) from None
            except UnicodeDecodeError as err:
                raise UserError(f"not UTF-8 (byte {err.start} of the line)", file=str(path), line=number) from None
            if not isinstance(record, dict):
                raise UserError("each line must be a JSON object", file=str(path), line=number)
            yield number, record, raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise UserError(f"not a readable compressed file ({err})", file=str(path)) from None
    except UserError:
        raise
    except Exception as err:  # zstandard's errors, which are not a subclass of anything shared
        if type(err).__module__.startswith("zstandard"):
            raise UserError(f"not a readable compressed file ({err})", file=str(path)) from None
        raise


def first_line_with_token(path: Path, at_least: int) -> int | None:
    """The first line of a pre-tokenized JSONL file with a token id >= ``at_least`` (None: none, or not
    such a file)."""
    if not path.is_file() or path.suffix.lower() in UNSUPPORTED or path.suffix.lower() == ".parquet":
        return None
    try:
        for number, record, _ in _iter_json_lines(path):
            ids = record.get("input_ids")
            if isinstance(ids, list) and any(type(i) is int and i >= at_least for i in ids):
                return number
    except UserError:
        return None
    return None


def detect_format(path: Path) -> str:
    """``tokenized`` if the first record has ``input_ids``, ``text`` otherwise; ``datasets`` for a directory."""
    if path.is_dir():
        if not any((path / marker).is_file() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
            raise UserError(
                "a directory that is not a saved datasets data set (give a JSONL file, or a directory "
                "written by datasets' save_to_disk)",
                file=str(path),
            )
        return "datasets"
    if path.suffix.lower() == ".parquet":
        return "tokenized" if "input_ids" in _parquet_columns(path) else "text"
    for _, record, _ in _iter_json_lines(path):
        return "tokenized" if "input_ids" in record else "text"
    raise UserError("the data set is empty", file=str(path))


def _tag(record: dict, tag_field: str, path: Path, number: int, where: str) -> str:
    value = record.get(tag_field)
    if not isinstance(value, str):
        raise UserError("missing or not a string (needed for tags)", file=str(path), line=number, field=where)
    return value


def _token_array(ids, raw: bytes, path: Path, number: int | None) -> np.ndarray:
    """``input_ids`` as int64, checked where it is read: integers in 0..2^31-1, never booleans (JSON
    ``true`` would read as 1) nor floats; vectorised, the element loop runs only to name a bad id."""
    if not isinstance(ids, list):
        raise UserError("must be a list of token ids", file=str(path), line=number, field="input_ids")
    array = np.asarray(ids) if ids else np.zeros(0, dtype=np.int64)
    key = raw.find(b'"input_ids"')
    span = raw[raw.find(b"[", key) : raw.find(b"]", key)] if key >= 0 else b""
    fine = array.dtype.kind in "iu" and array.ndim == 1 and b"true" not in span and b"false" not in span
    if fine and len(array):
        fine = int(array.min()) >= 0 and int(array.max()) <= MAX_TOKEN_ID
    if not fine:
        bad = next((i for i in ids if type(i) is not int or not 0 <= i <= MAX_TOKEN_ID), None)
        raise UserError(
            f"token ids must be integers in 0..{MAX_TOKEN_ID}, found {json.dumps(bad)}",
            file=str(path),
            line=number,
            field="input_ids",
        )
    return array.astype(np.int64, copy=False)


def _split_sources(ids: np.ndarray, sources, path: Path, number: int, tag_field: str | None):
    if not isinstance(sources, list):
        raise UserError("must be a list of {start, end} objects", file=str(path), line=number, field="source")
    docs, tags, previous, uncovered = [], [], 0, 0
    for k, entry in enumerate(sources):
        end = entry.get("end") if isinstance(entry, dict) else None
        start = entry.get("start", previous) if isinstance(entry, dict) else None
        if not isinstance(end, int) or not isinstance(start, int) or not previous <= start <= end <= len(ids):
            raise UserError(
                f"entry {k} needs integer start <= end within 0..{len(ids)}, in order",
                file=str(path),
                line=number,
                field="source",
            )
        docs.append(ids[start:end])
        tags.append(_tag(entry, tag_field, path, number, f"source[{k}].{tag_field}") if tag_field is not None else None)
        uncovered += start - previous
        previous = end
    return docs, tags, uncovered + len(ids) - previous


def iter_token_documents(
    path: Path, tag_field: str | None = None, reader: FileReader | None = None
) -> Iterator[Document]:
    """Pre-tokenized documents (one per ``source`` entry, else one per line) with their tags, in order."""
    if path.suffix.lower() == ".parquet":
        yield from _parquet_documents(path, "input_ids", tag_field)
        return
    uncovered = uncovered_lines = documents = 0
    for number, record, raw in _iter_json_lines(path, reader):
        if "input_ids" not in record:
            raise UserError("missing", file=str(path), line=number, field="input_ids")
        array = _token_array(record["input_ids"], raw, path, number)
        if "source" in record:
            docs, tags, outside = _split_sources(array, record["source"], path, number, tag_field)
            uncovered += outside
            uncovered_lines += outside > 0
        else:
            docs, tags = [array], [_tag(record, tag_field, path, number, tag_field) if tag_field is not None else None]
        documents += len(docs)
        yield from zip(docs, tags)
    if not documents:
        raise UserError("the data set is empty", file=str(path))
    if uncovered:
        warnings.warn(
            f"{path}: {uncovered} tokens on {uncovered_lines} lines lie outside every source span and are not trained on",
            category=RunWarning,
            stacklevel=2,
        )


def read_token_documents(path: Path, tag_field: str | None = None) -> Documents:
    """Every pre-tokenized document of ``path`` in memory (small files; streamed readers use
    :func:`iter_token_documents`)."""
    docs, tags = [], []
    for tokens, tag in iter_token_documents(path, tag_field):
        docs.append(tokens)
        tags.append(tag)
    return Documents(docs, tags if tag_field is not None else None)


def iter_texts(path: Path, field: str = "text", tag_field: str | None = None, reader: FileReader | None = None):
    """(text, tag) of every line of a JSONL file, in order."""
    if path.suffix.lower() == ".parquet":
        for value, tag, row in _parquet_records(path, field, tag_field):
            if not isinstance(value, str):
                raise UserError(f"not a string ({type(value).__name__})", file=f"{path} row {row}", field=field)
            yield value, tag
        return
    count = 0
    for number, record, _ in _iter_json_lines(path, reader):
        value = record.get(field)
        if not isinstance(value, str):
            problem = "missing" if field not in record else f"not a string ({type(value).__name__})"
            raise UserError(f"{problem}", file=str(path), line=number, field=field)
        count += 1
        yield value, (_tag(record, tag_field, path, number, tag_field) if tag_field is not None else None)
    if not count:
        raise UserError("the data set is empty", file=str(path))


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).schema_arrow.names
    except Exception as err:  # pyarrow raises its own ArrowInvalid for a file that is not Parquet
        raise UserError(f"not a readable Parquet file ({str(err).splitlines()[0]})", file=str(path)) from None


def _parquet_records(path: Path, field: str, tag_field: str | None):
    """(value, tag) of every row of a Parquet file, a record batch at a time."""
    import pyarrow.parquet as pq

    columns = _parquet_columns(path)
    for name in (field, tag_field):
        if name is not None and name not in columns:
            raise UserError(f"no column {name!r} (has {', '.join(columns)})", file=str(path), field=name)
    wanted = [field] + ([tag_field] if tag_field is not None else [])
    handle = pq.ParquetFile(path)
    row = 0
    for batch in handle.iter_batches(batch_size=TEXT_BATCH, columns=wanted):
        values = batch.column(field).to_pylist()
        tags = batch.column(tag_field).to_pylist() if tag_field is not None else [None] * len(values)
        for value, tag in zip(values, tags):
            row += 1
            yield value, tag, row
    if not row:
        raise UserError("the data set is empty", file=str(path))


def _parquet_documents(path: Path, column: str, tag_field: str | None) -> Iterator[Document]:
    """Pre-tokenized documents of a Parquet file, one per row."""
    for value, tag, row in _parquet_records(path, column, tag_field):
        if not isinstance(value, list):
            raise UserError("must be a list of token ids", file=f"{path} row {row}", field=column)
        # a Parquet list column has one element type: no JSON booleans to find in the raw line
        yield _token_array(value, b"", Path(f"{path} row {row}"), None), tag


def dataset_records(name: str, split: str):
    import datasets

    if Path(name).is_dir():
        loaded = datasets.load_from_disk(name)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise UserError(f"no split {split!r} (has {', '.join(loaded)})", file=name)
            loaded = loaded[split]
        return loaded
    try:
        return datasets.load_dataset(name, split=split)
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        raise UserError(f"cannot load data set {name!r}: {str(err).splitlines()[0]}", field="data.train") from None


def dataset_rows(records, column: str, tag_field: str | None) -> Iterator[tuple]:
    """(value, tag) of every row of a memory-mapped ``datasets`` table, a batch at a time."""
    for batch in records.iter(batch_size=TEXT_BATCH):
        tags = batch[tag_field] if tag_field is not None else [None] * len(batch[column])
        yield from zip(batch[column], tags)
