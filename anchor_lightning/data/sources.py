"""Reading documents: JSONL text, pre-tokenized JSONL (the paper's data-release format), a saved
``datasets`` directory or hub name, or the embedded default. Bad input raises a :class:`UserError`
naming the file, the line and the field.

Pre-tokenized rows look like ``{"input_ids": [...], "source": [{"start": s, "end": e, "domain": d}]}``:
each ``source`` entry is one document ``input_ids[start:end]`` (``start`` defaults to the previous
end); without ``source`` the whole row is one document.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anchor_lightning.data.default_corpus import generate_documents
from anchor_lightning.data.tokenizer import Tokenizer
from anchor_lightning.errors import UserError
from anchor_lightning.paths import file_sha256

FORMATS = ("auto", "text", "tokenized", "datasets")
DEFAULT_SOURCE = "default"


@dataclass
class Documents:
    """Token-id documents, and each one's tag text (the +Tag variant) when a tag field is configured."""

    token_ids: list[np.ndarray]
    tags: list[str] | None = None


@dataclass
class DocumentSource:
    """Where documents come from: a fingerprint of everything that decides their token ids (the key of
    the packed-row cache), known before any tokenization, and ``load()`` to read them."""

    fingerprint: str
    description: str
    load: Callable[[], Documents]
    pretokenized: bool = False  # token ids read as given (their documents may open with another BOS)


MAX_TOKEN_ID = 2**31 - 1  # rows store ids as int32
UNSUPPORTED = {
    ".zst": "zstd-compressed",
    ".parquet": "Parquet",
    ".arrow": "Arrow",
    ".bz2": "bzip2-compressed",
    ".xz": "xz-compressed",
    ".csv": "CSV",
}


def _open_lines(path: Path):
    """The file's lines as bytes: plain JSONL, or gzip-compressed (``.gz``)."""
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")
    kind = UNSUPPORTED.get(path.suffix.lower())
    if kind is not None:
        raise UserError(
            f"unsupported format: {kind} files are not read (JSONL, .jsonl.gz or a saved datasets directory are)",
            file=str(path),
        )
    return path.open("rb")


def _iter_json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    if path.is_dir():
        raise UserError("a directory, not a JSONL file", file=str(path))
    if not path.is_file():
        raise UserError("no such file", file=str(path))
    import gzip
    import zlib

    try:
        with _open_lines(path) as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise UserError(
                        f"malformed JSON ({err.msg if hasattr(err, 'msg') else err})", file=str(path), line=number
                    ) from None
                if not isinstance(record, dict):
                    raise UserError("each line must be a JSON object", file=str(path), line=number)
                yield number, record
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise UserError(f"not a readable gzip file ({err})", file=str(path)) from None


def first_line_with_token(path: Path, at_least: int) -> int | None:
    """The first line of a pre-tokenized JSONL file with a token id >= ``at_least`` (None: none, or not
    such a file)."""
    if not path.is_file() or path.suffix.lower() in UNSUPPORTED:
        return None
    try:
        for number, record in _iter_json_lines(path):
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
    for _, record in _iter_json_lines(path):
        return "tokenized" if "input_ids" in record else "text"
    raise UserError("the data set is empty", file=str(path))


def _tag(record: dict, tag_field: str, path: Path, number: int, where: str) -> str:
    value = record.get(tag_field)
    if not isinstance(value, str):
        raise UserError("missing or not a string (needed for tags)", file=str(path), line=number, field=where)
    return value


def read_texts(path: Path, field: str = "text", tag_field: str | None = None) -> tuple[list[str], list[str] | None]:
    """Texts (and tags, when ``tag_field`` is set) of a JSONL file, one document per line."""
    texts, tags = [], []
    for number, record in _iter_json_lines(path):
        value = record.get(field)
        if not isinstance(value, str):
            problem = "missing" if field not in record else f"not a string ({type(value).__name__})"
            raise UserError(f"{problem}", file=str(path), line=number, field=field)
        texts.append(value)
        if tag_field is not None:
            tags.append(_tag(record, tag_field, path, number, tag_field))
    if not texts:
        raise UserError("the data set is empty", file=str(path))
    return texts, tags if tag_field is not None else None


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
        if tag_field is not None:
            tags.append(_tag(entry, tag_field, path, number, f"source[{k}].{tag_field}"))
        uncovered += start - previous
        previous = end
    return docs, tags, uncovered + len(ids) - previous


def read_token_documents(path: Path, tag_field: str | None = None) -> Documents:
    """Pre-tokenized documents (one per ``source`` entry, else one per line) and their tags."""
    docs, tags, uncovered, uncovered_lines = [], [], 0, 0
    for number, record in _iter_json_lines(path):
        ids = record.get("input_ids")
        if not isinstance(ids, list):
            raise UserError(
                "missing" if "input_ids" not in record else "must be a list of token ids",
                file=str(path),
                line=number,
                field="input_ids",
            )
        bad = next((i for i in ids if type(i) is not int or not 0 <= i <= MAX_TOKEN_ID), None)  # bool is not an id
        if bad is not None or any(type(i) is not int for i in ids):
            raise UserError(
                f"token ids must be integers in 0..{MAX_TOKEN_ID}, found {json.dumps(bad)}",
                file=str(path),
                line=number,
                field="input_ids",
            )
        array = np.asarray(ids, dtype=np.int64)
        if "source" in record:
            more_docs, more_tags, outside = _split_sources(array, record["source"], path, number, tag_field)
            uncovered += outside
            uncovered_lines += outside > 0
        else:
            more_docs = [array]
            more_tags = [_tag(record, tag_field, path, number, tag_field)] if tag_field is not None else []
        docs.extend(more_docs)
        tags.extend(more_tags)
    if not docs:
        raise UserError("the data set is empty", file=str(path))
    if uncovered:
        warnings.warn(
            f"{path}: {uncovered} tokens on {uncovered_lines} lines lie outside every source span "
            "and are not trained on",
            stacklevel=2,
        )
    return Documents(docs, tags if tag_field is not None else None)


def tokenize(
    texts: list[str], tokenizer: Tokenizer, append_eos: bool, num_proc: int, eos_id: int | None = None
) -> list[np.ndarray]:
    """Tokenize with ``datasets.map`` (parallel over ``num_proc`` processes for large inputs); each text
    ends with ``eos_id`` (default: the tokenizer's EOS) when ``append_eos``."""
    from datasets import Dataset, disable_progress_bars, enable_progress_bars

    eos_id = tokenizer.eos_token_id if eos_id is None else eos_id
    eos = [eos_id] if append_eos and eos_id is not None else []

    def encode(batch):
        return {"input_ids": [ids + eos for ids in tokenizer.encode_batch(batch["text"])]}

    parallel = num_proc if len(texts) >= 1000 * num_proc else None
    quiet = len(texts) < 10_000
    if quiet:
        disable_progress_bars()
    try:
        dataset = Dataset.from_dict({"text": texts}).map(
            encode, batched=True, num_proc=parallel, remove_columns=["text"], desc="tokenizing"
        )
    finally:
        if quiet:
            enable_progress_bars()
    return [np.asarray(ids, dtype=np.int64) for ids in dataset["input_ids"]]


def _datasets_records(name: str, split: str):
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
    num_proc: int = 1,
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

    def encode(texts: list[str]) -> list[np.ndarray]:
        return tokenize(texts, tokenizer, append_eos, num_proc, eos_id)

    if source == DEFAULT_SOURCE or source.startswith(f"{DEFAULT_SOURCE}:"):
        count = default_corpus_size(source)
        if tag_field is not None:
            raise UserError("the embedded default corpus has no tags", field="data.tag_field")
        return DocumentSource(
            f"default-v1/{count}/{text_key}",
            f"embedded default corpus ({count} documents)",
            lambda: Documents(encode(generate_documents(count))),
        )
    path = Path(source)
    if data_format == "auto":
        if path.exists():
            data_format = detect_format(path)
        elif "/" in source and not source.endswith((".jsonl", ".json", ".gz")):
            data_format = "datasets"  # a hub name such as org/name
        else:
            raise UserError("no such file", file=source)
    if data_format in ("tokenized", "text") and not path.is_file():
        raise UserError("no such file", file=source)
    if data_format == "tokenized":
        return DocumentSource(
            f"tokenized/{file_sha256(path)[:16]}/tags={tag_field}",
            f"pre-tokenized {path}",
            lambda: read_token_documents(path, tag_field),
            pretokenized=True,
        )
    if data_format == "text":

        def load_text() -> Documents:
            texts, tags = read_texts(path, text_field, tag_field)
            return Documents(encode(texts), tags)

        return DocumentSource(f"text/{file_sha256(path)[:16]}/{text_field}/{text_key}", f"text {path}", load_text)
    records = _datasets_records(source, split)
    if len(records) == 0:
        raise UserError("the data set is empty", file=source)
    if tag_field is not None and tag_field not in records.column_names:
        raise UserError(f"no column {tag_field!r} for tags", file=source, field="data.tag_field")
    tags = (lambda: list(records[tag_field])) if tag_field is not None else (lambda: None)
    if "input_ids" in records.column_names:
        return DocumentSource(
            f"datasets/{records._fingerprint}/tags={tag_field}",
            f"datasets {source}",
            lambda: Documents([np.asarray(ids, dtype=np.int64) for ids in records["input_ids"]], tags()),
            pretokenized=True,
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
        lambda: Documents(encode(list(records[text_field])), tags()),
    )
