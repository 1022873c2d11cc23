"""Packing invariants, checked on random documents (hypothesis) for every mode and layout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anchor_lightning.data.batch import collate_rows
from anchor_lightning.data.packing import (
    IGNORE_INDEX,
    MODES,
    PAD_DOC,
    SHARED_ANCHOR_DOC,
    PackingSpec,
    check_mode_layout,
    pack_documents,
    target_keys,
)

FIRST, EOS = 1, 2
MODE_LAYOUTS = [
    ("anchor", "per_doc"),
    ("anchor", "shared"),
    ("intra_doc", "per_doc"),
    ("intra_doc_reset", "per_doc"),
    ("full", "per_doc"),
]

documents = st.lists(
    st.builds(
        lambda bos, body: ([FIRST] if bos else []) + body,
        st.booleans(),
        st.lists(st.integers(0, 50), min_size=0, max_size=90),
    ),
    min_size=1,
    max_size=12,
)


def stripped(doc):
    return doc[1:] if doc and doc[0] == FIRST else doc


@settings(max_examples=150, deadline=None)
@given(docs=documents, seq_len=st.integers(3, 64), layout=st.sampled_from(["per_doc", "shared"]))
def test_every_token_lands_once_and_counts_balance(docs, seq_len, layout):
    rows, stats = pack_documents(docs, PackingSpec(seq_len, layout, FIRST, (FIRST,)))
    assert stats.balanced()
    rebuilt = {i: [] for i in range(len(docs))}
    for row in rows:
        assert len(row.input_ids) == len(row.doc_ids) == len(row.is_first) == seq_len
        for chunk, (source, offset) in enumerate(row.chunk_sources):
            tokens = row.input_ids[(row.doc_ids == chunk) & ~row.is_first].tolist()
            assert offset == len(rebuilt[source]), "chunks of a document arrive in order"
            rebuilt[source].extend(tokens)
    for i, doc in enumerate(docs):
        assert rebuilt[i] == stripped(doc)
    assert stats.empty_documents == sum(1 for d in docs if not stripped(d))
    assert stats.source_tokens == sum(map(len, docs))
    assert stats.stripped_tokens == sum(1 for d in docs if d and d[0] == FIRST)
    assert stats.padding == sum(int((r.doc_ids == PAD_DOC).sum()) for r in rows)


@settings(max_examples=150, deadline=None)
@given(docs=documents, seq_len=st.integers(3, 64))
def test_first_tokens_open_every_packed_document(docs, seq_len):
    for layout in ("per_doc", "shared"):
        rows, stats = pack_documents(docs, PackingSpec(seq_len, layout, FIRST, (FIRST,)))
        for row in rows:
            assert (row.input_ids[row.is_first] == FIRST).all()
            if layout == "shared":
                assert row.is_first[0] and row.is_first.sum() == 1 and row.doc_ids[0] == SHARED_ANCHOR_DOC
            else:
                for chunk in range(len(row.chunk_sources)):
                    slots = np.flatnonzero(row.doc_ids == chunk)
                    assert row.is_first[slots[0]] and not row.is_first[slots[1:]].any()
                    assert (np.diff(slots) == 1).all(), "a packed document is contiguous"
            # padding only at the end
            pad = np.flatnonzero(row.doc_ids == PAD_DOC)
            assert len(pad) == 0 or pad[-1] == seq_len - 1 and (np.diff(pad) == 1).all()


def expected_positions(row, mode):
    """Positions written from the contract's table, slot by slot."""
    out, content_counter, slot_in_doc, previous = [], 0, 0, None
    for slot, (doc, first) in enumerate(zip(row.doc_ids.tolist(), row.is_first.tolist())):
        slot_in_doc = slot_in_doc + 1 if doc == previous else 0
        previous = doc
        if mode in ("full", "intra_doc"):
            out.append(slot)
        elif mode == "intra_doc_reset":
            out.append(slot_in_doc)
        elif first or doc == PAD_DOC:
            out.append(0)
        else:
            content_counter += 1
            out.append(content_counter)
    return out


@settings(max_examples=120, deadline=None)
@given(docs=documents, seq_len=st.integers(3, 48), which=st.sampled_from(MODE_LAYOUTS))
def test_positions_labels_and_segments(docs, seq_len, which):
    mode, layout = which
    rows, _ = pack_documents(docs, PackingSpec(seq_len, layout, FIRST, (FIRST,)))
    if not rows:
        return  # only empty documents
    batch = collate_rows(rows, mode, layout)
    for r, row in enumerate(rows):
        assert batch["position_ids"][r].tolist() == expected_positions(row, mode)
        labels = batch["labels"][r].tolist()
        for i in range(seq_len):
            learnable = (
                i + 1 < seq_len
                and row.doc_ids[i] >= 0
                and row.doc_ids[i] == row.doc_ids[i + 1]
                and not row.is_first[i]
                and not row.is_first[i + 1]
            )
            assert labels[i] == (int(row.input_ids[i + 1]) if learnable else IGNORE_INDEX)
    # cu_seqlens: int32, covers all B*T slots, one segment per run of a doc id (the whole row for full)
    cu = batch["cu_seqlens"]
    assert cu.dtype.is_floating_point is False and str(cu.dtype) == "torch.int32"
    assert cu[0] == 0 and cu[-1] == len(rows) * seq_len and (cu.diff() > 0).all()
    flat = batch["doc_ids"].flatten().tolist()
    if mode == "full":
        assert cu.tolist() == [seq_len * k for k in range(len(rows) + 1)]
    else:
        for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
            assert len(set(flat[start:end])) == 1
            assert end == len(flat) or end % seq_len == 0 or flat[end] != flat[end - 1]
    assert batch["max_seqlen"] == int(cu.diff().max()) and isinstance(batch["max_seqlen"], int)
    assert batch["num_targets"] == int((batch["labels"] != IGNORE_INDEX).sum())


@settings(max_examples=100, deadline=None)
@given(docs=documents, seq_len=st.integers(3, 48))
def test_every_mode_and_layout_trains_on_the_same_targets(docs, seq_len):
    """Without splits, all layouts give the same (document, offset) targets (the label rule of docs/design.md)."""
    longest = max(len(stripped(d)) for d in docs)
    seq_len = max(seq_len, longest + 1)  # every document fits a row whole in both layouts
    keys = {}
    for layout in ("per_doc", "shared"):
        rows, stats = pack_documents(docs, PackingSpec(seq_len, layout, FIRST, (FIRST,)))
        keys[layout] = sorted(k for row in rows for k in target_keys(row))
        if stats.split_documents == 0:
            expected = sorted((i, j) for i, d in enumerate(docs) for j in range(1, len(stripped(d))))
            assert keys[layout] == expected
    if all(pack_documents(docs, PackingSpec(seq_len, lay, FIRST, (FIRST,)))[1].split_documents == 0 for lay in keys):
        assert keys["per_doc"] == keys["shared"]


def test_split_chunks_each_get_their_own_first_token():
    doc = [FIRST] + list(range(10, 30))  # 20 content tokens
    rows, stats = pack_documents([doc], PackingSpec(8, "per_doc", FIRST, (FIRST,)))
    assert stats.split_documents == 1 and stats.chunks == 3 and stats.rows == 3
    assert [r.input_ids.tolist() for r in rows] == [
        [1, 10, 11, 12, 13, 14, 15, 16],
        [1, 17, 18, 19, 20, 21, 22, 23],
        [1, 24, 25, 26, 27, 28, 29, 0],
    ]
    assert [r.chunk_sources.tolist() for r in rows] == [[[0, 0]], [[0, 7]], [[0, 14]]]


def test_a_row_with_one_free_slot_is_padded_not_given_a_lone_first_token():
    rows, stats = pack_documents([[5, 6, 7, 8, 9, 10], [11, 12]], PackingSpec(8, "per_doc", FIRST, ()))
    assert rows[0].input_ids.tolist() == [1, 5, 6, 7, 8, 9, 10, 0]
    assert rows[1].input_ids.tolist()[:3] == [1, 11, 12]
    assert stats.padding == 1 + 5


def test_shared_layout_row_picture():
    rows, _ = pack_documents([[1, 10, 11, 12], [13, 14], [15, 16, 17]], PackingSpec(10, "shared", FIRST, (FIRST,)))
    row = rows[0]
    assert row.input_ids.tolist() == [1, 10, 11, 12, 13, 14, 15, 16, 17, 0]
    assert row.doc_ids.tolist() == [-1, 0, 0, 0, 1, 1, 2, 2, 2, -2]
    batch = collate_rows(rows, "anchor", "shared")
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 0]
    assert batch["labels"][0].tolist() == [-100, 11, 12, -100, 14, -100, 16, 17, -100, -100]


def test_unknown_mode_and_bad_combinations_are_refused():
    with pytest.raises(ValueError, match="unknown mode"):
        check_mode_layout("anchr", "per_doc")
    with pytest.raises(ValueError, match="only for mode 'anchor'"):
        check_mode_layout("full", "shared")
    with pytest.raises(ValueError, match="too small"):
        PackingSpec(2, "per_doc", FIRST)
    assert set(MODES) == {m for m, _ in MODE_LAYOUTS}


# ---------------------------------------------------------------------------------------------- variants
tags_for = st.lists(st.integers(60, 70), min_size=1, max_size=3)


@settings(max_examples=120, deadline=None)
@given(docs=documents, seq_len=st.integers(8, 64), layout=st.sampled_from(["per_doc", "shared"]), data=st.data())
def test_tags_open_every_packed_document_and_are_never_targets(docs, seq_len, layout, data):
    tags = [data.draw(tags_for) for _ in docs]
    rows, stats = pack_documents(docs, PackingSpec(seq_len, layout, FIRST, (FIRST,)), tags=tags)
    assert stats.balanced()
    rebuilt = {i: [] for i in range(len(docs))}
    for row in rows:
        prefix = row.is_prefix
        labels = collate_rows([row], "anchor", layout)["labels"][0].numpy()
        for chunk, (source, _) in enumerate(row.chunk_sources):
            slots = np.flatnonzero(row.doc_ids == chunk)
            tag_slots = slots[row.is_tag[slots]] if row.is_tag is not None else slots[:0]
            assert row.input_ids[tag_slots].tolist() == tags[source]
            assert tag_slots[0] == slots[0] + (1 if layout == "per_doc" else 0)  # right after F
            rebuilt[source].extend(row.input_ids[slots[~prefix[slots]]].tolist())
        # no label is a tag token, no tag slot carries a label
        shifted_prefix = np.append(prefix[1:], False)
        assert (labels[prefix | shifted_prefix] == IGNORE_INDEX).all()
        assert stats.tag_tokens >= 0
    for i, doc in enumerate(docs):
        assert rebuilt[i] == stripped(doc)


def test_tags_leave_the_targets_unchanged_when_nothing_is_split():
    docs = [[FIRST, 10, 11, 12, 13], [14, 15, 16], [FIRST, 17, 18, 19, 20, 21]]
    spec = PackingSpec(64, "shared", FIRST, (FIRST,))
    plain, _ = pack_documents(docs, spec)
    tagged, stats = pack_documents(docs, spec, tags=[[60, 61], [62], [60, 61]])
    assert stats.tag_tokens == 5
    assert target_keys(plain[0]) == target_keys(tagged[0])
    assert tagged[0].input_ids[:8].tolist() == [1, 60, 61, 10, 11, 12, 13, 62]
    batch = collate_rows(tagged, "anchor", "shared")
    assert batch["position_ids"][0, :8].tolist() == list(range(8))  # tags are numbered like content


def test_a_tag_too_long_for_a_row_is_refused():
    with pytest.raises(ValueError, match="leaves no room"):
        pack_documents([[5, 6, 7]], PackingSpec(4, "per_doc", FIRST), tags=[[60, 61, 62]])


@settings(max_examples=120, deadline=None)
@given(
    docs=documents,
    seq_len=st.integers(3, 64),
    layout=st.sampled_from(["per_doc", "shared"]),
    pieces=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_interleaved_chunks_keep_each_document_in_order(docs, seq_len, layout, pieces, seed):
    rows, stats = pack_documents(docs, PackingSpec(seq_len, layout, FIRST, (FIRST,)), interleave=(pieces, seed))
    assert stats.balanced()
    rebuilt = {i: [] for i in range(len(docs))}
    for row in rows:
        for chunk, (source, offset) in enumerate(row.chunk_sources):
            assert offset == len(rebuilt[source]), "a document's pieces arrive in order"
            rebuilt[source].extend(row.input_ids[(row.doc_ids == chunk) & ~row.is_first].tolist())
    for i, doc in enumerate(docs):
        assert rebuilt[i] == stripped(doc)
    again, _ = pack_documents(docs, PackingSpec(seq_len, layout, FIRST, (FIRST,)), interleave=(pieces, seed))
    assert [r.input_ids.tolist() for r in again] == [r.input_ids.tolist() for r in rows]


def test_interleaving_actually_interleaves():
    docs = [[FIRST] + [10 + d] * 40 for d in range(6)]
    rows, stats = pack_documents(docs, PackingSpec(1000, "per_doc", FIRST, (FIRST,)), interleave=(4, 0))
    order = [int(s) for s, _ in rows[0].chunk_sources]
    assert stats.chunks > 6 and stats.split_documents > 0
    assert order != sorted(order), "pieces of different documents are shuffled together"


def test_unknown_openings_count_documents_that_open_with_an_unknown_id():
    from collections import Counter

    from anchor_lightning.data.packing import unknown_openings

    spec = PackingSpec(16, "per_doc", 0, (0, 1))
    first_tokens = Counter({1: 1, 0: 1, 9: 2, 7: 1})  # documents by their opening id (as a token store counts)
    assert unknown_openings(first_tokens, spec) == {9: 2, 7: 1}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=6),
    st.sampled_from(["anchor", "intra_doc", "intra_doc_reset"]),
    st.integers(0, 7),
)
def test_causal_pairs_count_the_dense_masks_allowed_pairs(lengths, mode, padding):
    """inspect's share of attention pairs: the count equals the dense mask's, padding excluded."""
    import torch

    from anchor_lightning.attention.masks import dense_mask
    from anchor_lightning.data.packing import causal_pairs

    for layout in ("per_doc", "shared") if mode == "anchor" else ("per_doc",):
        ids = [SHARED_ANCHOR_DOC] if layout == "shared" else []
        for d, n in enumerate(lengths):
            ids += [d] * n
        doc_ids = np.array(ids + [PAD_DOC] * padding)
        real = torch.tensor(doc_ids != PAD_DOC)
        for m in (mode, "full"):
            mask = dense_mask(torch.tensor(doc_ids)[None], m, layout)[0, 0] & real[:, None] & real[None, :]
            assert causal_pairs(doc_ids, m, layout) == int(mask.sum())
