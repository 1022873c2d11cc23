"""Packing documents into rows of a fixed number of slots: pure functions, no I/O.

Every packed document opens with one *first token* F (the anchor id: the tokenizer's BOS, or a
configured id such as Qwen's ``<|endoftext|>``). A source document's own leading BOS (or anchor id)
is stripped and replaced by F; EOS stays as content. A document longer than the space left in a row
is split; each chunk becomes its own packed document with its own F.

Two row layouts carry the same documents:

``per_doc`` (varlen backend; also the only layout of ``intra_doc``, ``intra_doc_reset``, ``full``)::

    slot        0  1  2  3  4  5  6  7  8  9
    token       F  a1 a2 a3 F  b1 b2 F  c1 .      (. = padding)
    doc_ids     0  0  0  0  1  1  1  2  2  -2

``shared`` (sdpa / flex backends, ``anchor`` mode only): one F at slot 0 serves every document::

    slot        0  1  2  3  4  5  6  7  8  9
    token       F  a1 a2 a3 b1 b2 c1 c2 c3 .
    doc_ids     -1 0  0  0  1  1  2  2  2  -2

Positions (RoPE) and attention per mode, shown on the per_doc row above (x = may attend)::

    anchor (per_doc)       anchor (shared)       intra_doc            intra_doc_reset      full
    pos 0 1 2 3 0 4 5 0 6  pos 0 1 2 3 4 5 6 ..  pos 0 1 2 3 4 5 6..  pos 0 1 2 3 0 1 2..  pos 0 1 2 ..
        F a a a F b b F c      F a a a b b c         F a a a F b b        F a a a F b b        F a a a F b
    F   x                  F   x                 F   x                F   x                F   x
    a   x x                a   x x               a   x x              a   x x              a   x x
    a   x x x              a   x x x             a   x x x            a   x x x            a   x x x
    a   x x x x            a   x x x x           a   x x x x          a   x x x x          a   x x x x
    F           x          b   x       x         F           x        F           x        F   x x x x x
    b           x x        b   x       x x       b           x x      b           x x      b   x x x x x x

In ``anchor`` mode every F sits at position 0 and content is numbered 1, 2, 3 ... over content slots
only, never reset, so both layouts give every content token the same position and the same
attention: a per_doc F sees only itself, exactly like the shared one (docs/design.md, "Attention modes").

Labels are pre-shifted (``labels[i]`` is the target predicted at slot i) and follow one rule in every
mode: -100 where the query slot is an F, where the target slot is an F, and where the target lies in
another document (or in padding). So, for the same rows, every mode trains the same (document, offset)
targets. The two layouts make different rows (the shared layout spends one F per row, per_doc one per
packed document), so documents split at other places and a few targets next to the splits differ.

Two optional variants from the paper (section 3):

* ``+Tag``: a short token sequence (e.g. the tokenized domain "Wikipedia") opens every packed
  document, after its F; tag slots are never targets and never queries of a target (like F), so the
  same (document, offset) targets are trained with and without tags::

      slot   0  1  2  3  4  5  6  7  8  9
      token  F  t  a1 a2 a3 F  t  b1 b2 b3     (t = tag token)

* interleaved chunks: each document is cut at random points and the pieces of all documents are
  shuffled, keeping each document's pieces in order; every piece is its own packed document.

Drop rule: no content token is ever dropped. What leaves the count of source tokens is (a) the one
leading BOS/anchor id stripped from each document (replaced by F) and (b) documents that are empty
after stripping. A per_doc row whose last free slot cannot hold F plus one content token is padded.
The last row is padded, not dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# a document's token ids: a list, or a NumPy array (what the token store memory-maps)
Tokens = Sequence[int] | np.ndarray


class TagLookup(Protocol):
    """The tag tokens of document ``k`` of a part (a list of them, or a lookup into the token store)."""

    def __getitem__(self, k: int) -> Tokens: ...


MODES = ("anchor", "intra_doc", "intra_doc_reset", "full")
LAYOUTS = ("per_doc", "shared")
IGNORE_INDEX = -100
PAD_DOC = -2  # doc id of padding slots
SHARED_ANCHOR_DOC = -1  # doc id of the shared layout's anchor at slot 0
MIN_SEQ_LEN = 3  # F + two content tokens: the smallest row that holds one training target


def check_mode_layout(mode: str, layout: str) -> None:
    """Raise ValueError for an unknown mode/layout or a combination the contract does not define."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if layout == "shared" and mode != "anchor":
        raise ValueError(f"layout 'shared' exists only for mode 'anchor', not {mode!r}")


@dataclass(frozen=True)
class PackingSpec:
    """Everything that decides how documents become rows (and so part of the cache key)."""

    seq_len: int
    layout: str
    first_token_id: int
    strip_ids: tuple[int, ...] = ()
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r} (choose from {', '.join(LAYOUTS)})")
        if self.seq_len < MIN_SEQ_LEN:
            raise ValueError(
                f"row length {self.seq_len} is too small: a row needs at least {MIN_SEQ_LEN} slots "
                "(the first token and two content tokens)"
            )


@dataclass
class PackStats:
    """Counts that account for every source token: see :meth:`balanced`."""

    documents: int = 0  # source documents seen
    source_tokens: int = 0  # tokens in the source documents
    stripped_tokens: int = 0  # leading BOS / anchor ids replaced by F
    empty_documents: int = 0  # documents with no content after stripping (dropped)
    content_tokens: int = 0  # source tokens placed in rows
    chunks: int = 0  # packed documents (each with its own F, or sharing the shared anchor)
    split_documents: int = 0  # source documents split over more than one chunk
    first_tokens: int = 0  # F slots
    tag_tokens: int = 0  # +Tag slots
    padding: int = 0  # padding slots
    rows: int = 0
    slots: int = 0  # slots per row (the row length)

    def balanced(self) -> bool:
        """Every source token is in a row or stripped, and every slot is content, F or padding."""
        return (
            self.source_tokens == self.content_tokens + self.stripped_tokens
            and self.content_tokens + self.first_tokens + self.tag_tokens + self.padding == self.rows * self.slots
        )

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PackedRow:
    """One row. ``chunk_sources[c] = (source document index, offset of chunk c's first content token
    in the stripped document)``; chunk c is the packed document with ``doc_ids == c``."""

    input_ids: np.ndarray  # int32 [T]
    doc_ids: np.ndarray  # int32 [T]
    is_first: np.ndarray  # bool [T]
    chunk_sources: np.ndarray  # int64 [n_chunks, 2]
    is_tag: np.ndarray | None = None  # bool [T]; None: no tags

    @property
    def is_prefix(self) -> np.ndarray:
        """Slots that are never a target nor the query of one: first tokens and tags."""
        return self.is_first if self.is_tag is None else self.is_first | self.is_tag


@dataclass
class _RowBuilder:
    spec: PackingSpec
    input_ids: np.ndarray = field(init=False)
    doc_ids: np.ndarray = field(init=False)
    is_first: np.ndarray = field(init=False)
    is_tag: np.ndarray = field(init=False)
    used: int = field(init=False, default=0)
    sources: list[tuple[int, int]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        t = self.spec.seq_len
        self.input_ids = np.full(t, self.spec.pad_id, dtype=np.int32)
        self.doc_ids = np.full(t, PAD_DOC, dtype=np.int32)
        self.is_first = np.zeros(t, dtype=bool)
        self.is_tag = np.zeros(t, dtype=bool)
        if self.spec.layout == "shared":
            self._put_first(SHARED_ANCHOR_DOC)

    def _put_first(self, doc: int) -> None:
        self.input_ids[self.used] = self.spec.first_token_id
        self.doc_ids[self.used] = doc
        self.is_first[self.used] = True
        self.used += 1

    def room(self, tag_len: int = 0) -> int:
        """Content tokens the next chunk (opened by F in per_doc rows, then its tag) can take."""
        free = self.spec.seq_len - self.used - tag_len
        return free - 1 if self.spec.layout == "per_doc" else free

    @property
    def has_content(self) -> bool:
        return bool(self.sources)

    def add_chunk(self, tokens: np.ndarray, source: int, offset: int, tag: np.ndarray) -> None:
        chunk = len(self.sources)
        if self.spec.layout == "per_doc":
            self._put_first(chunk)
        for values, is_tag in ((tag, True), (tokens, False)):
            end = self.used + len(values)
            self.input_ids[self.used : end] = values
            self.doc_ids[self.used : end] = chunk
            self.is_tag[self.used : end] = is_tag
            self.used = end
        self.sources.append((source, offset))

    def finish(self) -> PackedRow:
        return PackedRow(
            self.input_ids,
            self.doc_ids,
            self.is_first,
            np.asarray(self.sources, dtype=np.int64).reshape(-1, 2),
            self.is_tag if self.is_tag.any() else None,
        )


@dataclass(frozen=True)
class Piece:
    """A run of one document's content to place: ``tokens`` start at ``offset`` of document ``source``,
    one of the ``pieces`` its document was cut into (interleaving; 1 otherwise)."""

    source: int
    offset: int
    tokens: np.ndarray
    pieces: int = 1


def strip_leading(document: Tokens, strip_ids: Iterable[int]) -> Tokens:
    """Drop one leading BOS / anchor id: the packer puts its own first token there."""
    return document[1:] if len(document) and int(document[0]) in set(strip_ids) else document


def unknown_openings(first_tokens: Counter, spec: PackingSpec) -> Counter:
    """Of the counts of documents by their opening id, those of ids that are neither stripped nor F."""
    known = {spec.first_token_id, *spec.strip_ids}
    return Counter({token: n for token, n in first_tokens.items() if token not in known})


def interleave_pieces(
    pieces: Iterable[Piece], max_pieces: int, seed: int, window: int | None = None
) -> Iterator[Piece]:
    """The paper's interleaved chunks: cut every document at random points into 1 to ``max_pieces``
    pieces, then shuffle the pieces while keeping each document's pieces in order. The shuffle mixes
    ``window`` consecutive documents at a time (None: all of them); what it holds in memory is the
    pieces of one window (views of the documents, which a memory-mapped corpus does not copy)."""
    rng = np.random.default_rng(seed)
    source = iter(pieces)
    while True:
        queues: list[list[Piece]] = []
        for piece in source:
            n = len(piece.tokens)
            count = min(n, int(rng.integers(1, max_pieces + 1)))
            cuts: Iterable[int] = (
                np.sort(rng.choice(np.arange(1, n), size=count - 1, replace=False)) if count > 1 else []
            )
            bounds = [0, *(int(c) for c in cuts), n]
            queues.append(
                [
                    Piece(piece.source, piece.offset + a, piece.tokens[a:b], len(bounds) - 1)
                    for a, b in zip(bounds[:-1], bounds[1:])
                ]
            )
            if window is not None and len(queues) == window:
                break
        if not queues:
            return
        order = np.repeat(np.arange(len(queues)), [len(q) for q in queues])
        rng.shuffle(order)
        heads = [0] * len(queues)
        for i in order:
            yield queues[i][heads[i]]
            heads[i] += 1


def iter_packed_rows(
    documents: Iterable[Tokens],
    spec: PackingSpec,
    stats: PackStats | None = None,
    tags: TagLookup | None = None,
    interleave: tuple[int, int] | None = None,
) -> Iterator[PackedRow]:
    """Pack documents greedily into rows, splitting them at row ends.

    ``tags[i]`` (the +Tag variant) opens every chunk of document i (any object indexed by the
    document's position). ``interleave = (max_pieces, seed[, window])`` cuts and shuffles documents
    first (the interleaved-chunks variant; see :func:`interleave_pieces`). Documents are consumed as
    they come: memory holds one row and one document (one window of them when interleaving).
    ``stats`` (if given) is updated as rows are produced and balances once the iterator ends.
    """
    stats = stats if stats is not None else PackStats()
    stats.slots = spec.seq_len
    strip = frozenset(spec.strip_ids)
    no_tag = np.zeros(0, dtype=np.int64)

    def pieces() -> Iterator[Piece]:
        for index, document in enumerate(documents):
            tokens = np.asarray(document, dtype=np.int64)
            stats.documents += 1
            stats.source_tokens += len(tokens)
            content = strip_leading(tokens, strip)
            stats.stripped_tokens += len(tokens) - len(content)
            if len(content) == 0:
                stats.empty_documents += 1
                continue
            stats.content_tokens += len(content)
            yield Piece(index, 0, np.asarray(content))

    def close(r: _RowBuilder) -> PackedRow:
        stats.rows += 1
        stats.first_tokens += int(r.is_first.sum())
        stats.tag_tokens += int(r.is_tag.sum())
        stats.padding += spec.seq_len - r.used
        return r.finish()

    stream = interleave_pieces(pieces(), *interleave) if interleave else pieces()
    row = _RowBuilder(spec)
    for piece in stream:
        tag = np.asarray(tags[piece.source], dtype=np.int64) if tags is not None else no_tag
        if spec.seq_len - 1 - len(tag) < 1:  # an empty row: F, the tag, and at least one token
            raise ValueError(
                f"the tag of document {piece.source} ({len(tag)} tokens) leaves no room in a {spec.seq_len}-slot row"
            )
        offset = chunks = 0
        while offset < len(piece.tokens):
            if row.room(len(tag)) < 1:
                yield close(row)
                row = _RowBuilder(spec)
            take = min(row.room(len(tag)), len(piece.tokens) - offset)
            row.add_chunk(piece.tokens[offset : offset + take], piece.source, piece.offset + offset, tag)
            offset += take
            chunks += 1
            stats.chunks += 1
        # a document is split when it makes more than one chunk: cut into pieces (counted at its first
        # piece, the one at offset 0), or one piece that ran over a row end
        if (piece.pieces > 1 and piece.offset == 0) or (piece.pieces == 1 and chunks > 1):
            stats.split_documents += 1
    if row.has_content:
        yield close(row)


def holdout_scores(indices: np.ndarray, seed: int = 0) -> np.ndarray:
    """A number in [0, 1) for each document index (splitmix64 of index and seed): documents scoring
    below the validation share are held out, so the choice needs no pass over the corpus and is the
    same on every machine."""
    with np.errstate(over="ignore"):
        x = np.asarray(indices, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def pack_documents(
    documents: Iterable[Tokens],
    spec: PackingSpec,
    tags: TagLookup | None = None,
    interleave: tuple[int, int] | None = None,
) -> tuple[list[PackedRow], PackStats]:
    """All rows at once, with their balanced statistics."""
    stats = PackStats()
    rows = list(iter_packed_rows(documents, spec, stats, tags, interleave))
    return rows, stats


# ----------------------------------------------------------------------------------------------
# Per-row fields derived from (input_ids, doc_ids, is_first, is_tag): the mode decides positions and
# segments. Tag tokens are numbered like content (they are tokens of the document).


def _run_starts(doc_ids: np.ndarray) -> np.ndarray:
    """Index of the first slot of each run of equal doc ids."""
    change = np.ones(len(doc_ids), dtype=bool)
    change[1:] = doc_ids[1:] != doc_ids[:-1]
    return np.flatnonzero(change)


def position_ids(doc_ids: np.ndarray, is_first: np.ndarray, mode: str) -> np.ndarray:
    """RoPE positions of one row (see the module docstring's table)."""
    t = len(doc_ids)
    if mode in ("full", "intra_doc"):
        return np.arange(t, dtype=np.int64)
    if mode == "intra_doc_reset":
        starts = _run_starts(doc_ids)
        lengths = np.diff(np.append(starts, t))
        return np.arange(t, dtype=np.int64) - np.repeat(starts, lengths)
    if mode == "anchor":
        content = (doc_ids >= 0) & ~is_first
        return np.where(content, np.cumsum(content), 0).astype(np.int64)
    raise ValueError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")


def shifted_labels(input_ids: np.ndarray, doc_ids: np.ndarray, is_prefix: np.ndarray) -> np.ndarray:
    """``labels[i]`` = the token at slot i+1 when both slots hold content (not F, not a tag) of the
    same document."""
    labels = np.full(len(input_ids), IGNORE_INDEX, dtype=np.int64)
    valid = (doc_ids[:-1] == doc_ids[1:]) & (doc_ids[:-1] >= 0) & ~is_prefix[:-1] & ~is_prefix[1:]
    labels[:-1][valid] = input_ids[1:][valid]
    return labels


def segment_lengths(doc_ids: np.ndarray, mode: str) -> np.ndarray:
    """Lengths of the row's attention segments, in slot order (varlen's ``cu_seqlens`` per row):
    the whole row for ``full``, each run of one doc id (a packed document, or the padding) otherwise."""
    if mode == "full":
        return np.array([len(doc_ids)], dtype=np.int64)
    starts = _run_starts(doc_ids)
    return np.diff(np.append(starts, len(doc_ids)))


def attention_pairs(doc_ids: np.ndarray, mode: str, layout: str) -> int:
    """sum(d_i ** 2) over the row's attention spans, for the FLOPs rule (padding gets no credit): each
    packed document with its first token (shared layout: plus the anchor column), or the whole
    non-padding row under ``full``."""
    real = doc_ids[doc_ids != PAD_DOC]
    if mode == "full":
        return len(real) ** 2
    docs = real[real >= 0]
    spans = np.bincount(docs).astype(np.int64) if len(docs) else np.zeros(0, dtype=np.int64)
    spans = spans[spans > 0]
    if layout == "shared":
        spans = spans + 1
    return int((spans**2).sum()) + int((real == SHARED_ANCHOR_DOC).sum())


def causal_pairs(doc_ids: np.ndarray, mode: str, layout: str) -> int:
    """The (query, key) pairs a row's causal mask allows (padding excluded): n(n+1)/2 over the row under
    ``full``; under the document masks s(s+1)/2 over each packed document with its first token, and in
    the shared layout each document's pairs with the one anchor. The document masks allow a subset of
    full attention's pairs over the same row."""
    real = doc_ids[doc_ids != PAD_DOC]
    if mode == "full":
        return len(real) * (len(real) + 1) // 2
    docs = real[real >= 0]
    spans = np.bincount(docs).astype(np.int64) if len(docs) else np.zeros(0, dtype=np.int64)
    spans = spans[spans > 0]
    pairs = int((spans * (spans + 1) // 2).sum())
    if layout == "shared":
        pairs += int(spans.sum()) + int((real == SHARED_ANCHOR_DOC).sum())
    return pairs


def target_keys(row: PackedRow) -> list[tuple[int, int]]:
    """(source document, offset in the stripped document) of the target at every labelled slot, in slot
    order: the key for comparing per-target losses across modes and layouts."""
    labels = shifted_labels(row.input_ids, row.doc_ids, row.is_prefix)
    content = (row.doc_ids >= 0) & ~row.is_prefix
    keys = []
    chunk_start: dict[int, int] = {}
    for slot in np.flatnonzero(content):
        chunk_start.setdefault(int(row.doc_ids[slot]), int(slot))
    for slot in np.flatnonzero(labels != IGNORE_INDEX):
        chunk = int(row.doc_ids[slot + 1])
        source, offset = row.chunk_sources[chunk]
        keys.append((int(source), int(offset) + int(slot + 1 - chunk_start[chunk])))
    return keys
