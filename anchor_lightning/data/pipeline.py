"""The data pipeline as plain functions, without Lightning: source -> token store -> split -> rows.

1. **Source** (``sources.open_source``): a file, a ``datasets`` directory or the embedded corpus, read
   as a stream of documents (token ids; text is tokenized on the way) with a fingerprint of its content.
2. **Token store** (:func:`token_store`): the source's documents tokenized once into the cache
   (``token_store.py``), shared by every row length and mode.
3. **Split** (:func:`holdout_positions`): the held-out documents chosen by a hash of each document's
   index (no pass over the corpus; the same on every machine).
4. **Rows** (:func:`packed_rows`): each part's documents packed by the pure functions of
   ``packing.py`` under a :class:`~anchor_lightning.data.packing.PackingSpec`, written once into the
   cache (``cache.py``) and memory-mapped.
5. **Batches** stay with the loaders (``datamodule.py``: sampler and collation to the batch contract).

:func:`prepare_rows` runs steps 1-4 for a :class:`DataSettings`; ``prepare``, ``inspect``, the data
module and tests call it. Every cache entry is written by one process at a time (the others wait).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anchor_lightning.data import cache as row_cache
from anchor_lightning.data.formats import first_line_with_token
from anchor_lightning.data.packing import (
    MIN_SEQ_LEN,
    PackingSpec,
    PackStats,
    check_mode_layout,
    holdout_scores,
    iter_packed_rows,
    unknown_openings,
)
from anchor_lightning.data.sources import DEFAULT_SOURCE, DocumentSource, open_source
from anchor_lightning.data.token_store import TokenStore, store_key, write_store
from anchor_lightning.data.tokenizer import Tokenizer, load_tokenizer, resolve_anchor_id
from anchor_lightning.errors import RunWarning, UserError
from anchor_lightning.paths import exclusive, writable_directory

log = logging.getLogger(__name__)


@dataclass
class DataSettings:
    """What makes the rows (``PackedDataModule``'s arguments of the same names say what each means)."""

    train: str = DEFAULT_SOURCE
    val: str | None = None
    val_fraction: float = 0.05
    format: str = "auto"
    text_field: str = "text"
    tokenizer: str | None = None
    anchor_id: int | None = None
    append_eos: bool = True
    eos_id: int | None = None
    tag_field: str | None = None
    interleave_pieces: int | None = None
    interleave_window: int | None = 10_000
    seq_len: int = 512
    mode: str = "anchor"
    layout: str = "shared"
    seed: int = 0
    cache_dir: str = ".cache/anchor_lightning"

    def check(self) -> None:
        """Refuse impossible settings in one line, before any work."""
        check_mode_layout(self.mode, self.layout)
        if self.seq_len < MIN_SEQ_LEN:
            raise UserError(f"row length {self.seq_len} is too small (at least {MIN_SEQ_LEN} slots)", field="seq_len")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"must be in [0, 1), got {self.val_fraction}", field="data.val_fraction")
        if self.interleave_pieces is not None and self.interleave_pieces < 1:
            raise UserError(f"must be at least 1, got {self.interleave_pieces}", field="data.interleave_pieces")
        if self.interleave_window is not None and self.interleave_window < 1:
            raise UserError(f"must be at least 1, got {self.interleave_window}", field="data.interleave_window")

    @property
    def interleave(self) -> tuple | None:
        return (self.interleave_pieces, self.seed, self.interleave_window) if self.interleave_pieces else None


def packing_spec(settings: DataSettings, tokenizer: Tokenizer) -> PackingSpec:
    """Rows of ``seq_len`` slots in the layout, F = the anchor id; F and the tokenizer's BOS are stripped
    from documents that open with them."""
    anchor = resolve_anchor_id(tokenizer, settings.anchor_id, len(tokenizer))
    strip = {anchor} | ({tokenizer.bos_token_id} if tokenizer.bos_token_id is not None else set())
    return PackingSpec(settings.seq_len, settings.layout, anchor, tuple(sorted(strip)))


def open_documents(settings: DataSettings, source: str, tokenizer: Tokenizer) -> DocumentSource:
    """Step 1: the source named ``source``, read with the settings' format, fields and EOS rule."""
    return open_source(
        source,
        tokenizer,
        data_format=settings.format,
        text_field=settings.text_field,
        append_eos=settings.append_eos,
        eos_id=settings.eos_id,
        tag_field=settings.tag_field,
    )


def token_store(source: DocumentSource, cache_dir: str) -> TokenStore:
    """Step 2: the source's tokenized documents, from the cache or tokenized now."""
    directory = writable_directory(cache_dir, "data.cache_dir") / f"tokens-{store_key(source.fingerprint)}"
    with exclusive(
        directory.with_name(f".{directory.name}.lock"), f"waiting for another process tokenizing {source.description}"
    ):
        if (directory / "meta.json").is_file():
            return TokenStore(directory)
        return write_store(directory, source.documents(), source.description, source.size)


def check_openings(store: TokenStore, spec: PackingSpec, tokenizer: Tokenizer, description: str) -> None:
    """Refuse (a special token) or warn about pre-tokenized documents that mostly open with an id the
    packer neither strips nor uses as F: a BOS of another tokenizer, kept as content after F."""
    openings, total = unknown_openings(store.first_tokens, spec), len(store)
    if not openings:
        return
    token, count = openings.most_common(1)[0]
    if count < max(2, total // 2):
        return
    message = (
        f"{count} of {total} documents of {description} open with token id {token}, which is neither the first "
        f"token F ({spec.first_token_id}) nor stripped ({', '.join(map(str, spec.strip_ids)) or 'nothing'}): "
        "it would stay as content right after F"
    )
    if token in tokenizer.special_ids:
        raise UserError(
            f"{message}; it is a special token of the tokenizer: was the data tokenized for this model? "
            "(data.anchor_id sets F; the tokenizer's BOS is stripped)",
            field="data.train",
        )
    warnings.warn(
        f"{message} (if it is a BOS of the tokenizer the data was made with, the data does not match data.tokenizer)",
        category=RunWarning,
        stacklevel=3,
    )


def holdout_positions(count: int, fraction: float) -> np.ndarray:
    """Step 3: indices of the held-out documents, a hash below ``fraction`` (at least one document)."""
    scores = holdout_scores(np.arange(count))
    held = np.flatnonzero(scores < fraction)
    if len(held) == 0:
        held = np.asarray([int(np.argmin(scores))])
    if len(held) >= count:
        raise UserError("too few documents to hold out a validation share", field="data.val_fraction")
    return held


class _PartTags:
    """The tag tokens of the documents of one part, by their position in that part (what the packer
    indexes), read from the store without a list per document."""

    def __init__(self, tag_index: np.ndarray, positions: np.ndarray | None, encoded: list[np.ndarray]) -> None:
        self.tag_index, self.positions, self.encoded = tag_index, positions, encoded

    def __getitem__(self, k: int) -> np.ndarray:
        index = self.positions[k] if self.positions is not None else k
        return self.encoded[self.tag_index[index]]


def _rows(store: TokenStore, positions, spec: PackingSpec, stats: PackStats, tokenizer, interleave) -> Iterator:
    tags: _PartTags | None = None
    if store.tag_index is not None:
        encoded = [np.asarray(ids, dtype=np.int64) for ids in tokenizer.encode_batch(store.tag_names)]
        tags = _PartTags(store.tag_index, positions, encoded)
    try:
        yield from iter_packed_rows(store.documents(positions), spec, stats, tags, interleave)
    except ValueError as err:
        raise UserError(str(err), field="data.tag_field") from None


def packed_rows(
    store: TokenStore,
    positions: np.ndarray | None,
    spec: PackingSpec,
    fingerprint: str,
    part: str,
    cache_dir: str,
    tokenizer: Tokenizer,
    interleave: tuple | None = None,
) -> row_cache.PackedRows:
    """Step 4: the packed rows of the store's documents at ``positions`` (all when None), from the cache
    or packed now; ``fingerprint`` and ``part`` name the documents in the cache key."""
    parts = {"documents": fingerprint, "part": part, "spec": spec.__dict__, "interleave": interleave}
    directory = writable_directory(cache_dir, "data.cache_dir") / row_cache.cache_key(parts)
    with exclusive(directory.with_name(f".{directory.name}.lock"), f"waiting for another process packing {part} rows"):
        if (directory / "meta.json").is_file():
            return row_cache.load_rows(directory)
        stats = PackStats()
        rows = row_cache.write_rows(
            directory, _rows(store, positions, spec, stats, tokenizer, interleave), stats, parts
        )
    log.info("packed %s rows of %s: %s", part, fingerprint, stats.as_dict())
    return rows


@dataclass
class PreparedData:
    """The rows of a run: training and validation (None without validation), which data and packing
    made them (checked on resume), and the largest token id they hold."""

    train: row_cache.PackedRows
    val: row_cache.PackedRows | None
    identity: dict = field(default_factory=dict)
    max_token_id: int = -1


def prepare_rows(settings: DataSettings, tokenizer: Tokenizer | None = None) -> PreparedData:
    """Steps 1-4 for ``settings``: every part's rows, from the cache or made now."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(settings.tokenizer)
    spec = packing_spec(settings, tokenizer)
    train = open_documents(settings, settings.train, tokenizer)
    store = token_store(train, settings.cache_dir)
    if train.pretokenized:
        check_openings(store, spec, tokenizer, train.description)
    held_out = settings.val is None and settings.val_fraction > 0
    split_key = f"{train.fingerprint}/holdout={f'hash:{settings.val_fraction}' if held_out else 0}"
    val = open_documents(settings, settings.val, tokenizer) if settings.val is not None else None
    identity = {
        "train": split_key,
        "val": val.fingerprint if val is not None else None,
        "packing": dict(spec.__dict__),
        "tags": settings.tag_field,
        "interleave": list(settings.interleave) if settings.interleave is not None else None,
    }
    train_positions = val_positions = None
    if held_out:
        val_positions = holdout_positions(len(store), settings.val_fraction)
        keep = np.ones(len(store), dtype=bool)
        keep[val_positions] = False
        train_positions = np.flatnonzero(keep)

    def pack(part_store: TokenStore, positions: np.ndarray | None, fingerprint: str, part: str):
        return packed_rows(
            part_store, positions, spec, fingerprint, part, settings.cache_dir, tokenizer, settings.interleave
        )

    train_rows = pack(store, train_positions, split_key, "train")
    if len(train_rows) == 0:
        raise UserError("the training data set packs into no rows (no document has content)", field="data.train")
    val_rows = None
    if val is not None:
        val_rows = pack(token_store(val, settings.cache_dir), None, val.fingerprint, "val")
    elif held_out:
        val_rows = pack(store, val_positions, split_key, "val")
    max_token_id = max(rows.max_token_id for rows in (train_rows, val_rows) if rows is not None and len(rows))
    return PreparedData(train_rows, val_rows, identity, max_token_id)


def locate_token(settings: DataSettings, at_least: int) -> tuple[str | None, int | None]:
    """(file, line) of the first pre-tokenized line holding an id >= ``at_least``, for error messages."""
    for source in (settings.train, settings.val):
        if source is None:
            continue
        found = first_line_with_token(Path(source), at_least)
        if found is not None:
            return source, found
    return (None, None)
