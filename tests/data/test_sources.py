"""Readers, tokenization and the packed-row cache, on the real WikiText-2 files in ../shared/data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import transformers

from anchor_lightning.data import formats, sources
from anchor_lightning.data.datamodule import PackedDataModule
from anchor_lightning.data.default_corpus import generate_documents
from anchor_lightning.data.tokenizer import ByteTokenizer
from anchor_lightning.errors import RunWarning
from tests.conftest import SHARED_DATA, needs_shared


@pytest.fixture(scope="module")
def llama_tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama-tokenizer")
    shutil.copy(SHARED_DATA / "llama2-tokenizer.model", folder / "tokenizer.model")
    return str(folder)


@needs_shared
def test_pre_tokenized_rows_split_into_their_source_documents():
    documents = formats.read_token_documents(SHARED_DATA / "wikitext2-valid.tokenized.jsonl", tag_field="domain")
    docs = documents.token_ids
    assert documents.tags == ["wikitext"] * 60
    assert len(docs) == 60
    assert sum(len(d) for d in docs) == 297_743
    assert all(d[0] == 1 and d[-1] == 2 for d in docs)  # BOS + pieces + EOS
    assert min(map(len, docs)) == 1_059 and max(map(len, docs)) == 26_356


@needs_shared
@pytest.mark.skipif(
    tuple(int(x) for x in transformers.__version__.split(".")[:2]) < (5, 24),
    reason="the Llama tokenizer encodes a leading space differently before transformers 5.24 (seen on 5.17)",
)
def test_text_and_pre_tokenized_paths_pack_identical_rows(tmp_path, llama_tokenizer_dir):
    """The text reader + HF tokenizer + EOS reproduces the paper-format file token for token."""
    rows = {}
    for name in ("wikitext2-valid.jsonl", "wikitext2-valid.tokenized.jsonl"):
        data = PackedDataModule(
            str(SHARED_DATA / name),
            tokenizer=llama_tokenizer_dir,
            seq_len=4096,
            layout="per_doc",
            val_fraction=0.0,
            cache_dir=str(tmp_path / name),
        )
        data.setup("fit")
        rows[name] = data.train_rows
        stats = data.train_rows.stats
        assert stats["documents"] == 60 and stats["empty_documents"] == 0
    text, tokenized = rows.values()
    assert len(text) == len(tokenized) > 70
    assert np.array_equal(np.asarray(text.input_ids), np.asarray(tokenized.input_ids))
    assert np.array_equal(np.asarray(text.doc_ids), np.asarray(tokenized.doc_ids))


def test_packed_rows_are_cached_and_reused(tmp_path, monkeypatch):
    first = PackedDataModule(seq_len=256, cache_dir=str(tmp_path))
    first.setup("fit")

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("a cache hit must not tokenize again")

    monkeypatch.setattr(sources, "tokenize", no_tokenizing)
    again = PackedDataModule(seq_len=256, cache_dir=str(tmp_path))
    again.setup("fit")
    assert np.array_equal(np.asarray(first.train_rows.input_ids), np.asarray(again.train_rows.input_ids))
    assert again.train_rows.directory == first.train_rows.directory
    # anything that changes the rows changes the key
    other = PackedDataModule(seq_len=256, cache_dir=str(tmp_path), layout="per_doc", mode="anchor")
    monkeypatch.undo()
    other.setup("fit")
    assert other.train_rows.directory != first.train_rows.directory


def test_embedded_default_is_fixed_text():
    docs = generate_documents()
    assert len(docs) == 400
    assert docs[0].startswith("Pavel and the bridge\n\nThe bell by the bridge was narrow, and Pavel knew it.")
    assert sum(map(len, docs)) == 378_932


def test_datasets_directory_with_text_column(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"text": ["one document", "another one", "a third"]}).save_to_disk(str(tmp_path / "ds"))
    source = sources.open_source(str(tmp_path / "ds"), ByteTokenizer())
    docs = source.load().token_ids
    assert [bytes(d[:-1].tolist()).decode() for d in docs] == ["one document", "another one", "a third"]
    assert all(d[-1] == ByteTokenizer.eos_token_id for d in docs)


def test_datasets_directory_with_token_ids(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"input_ids": [[256, 5, 6, 257], [256, 7, 257]]}).save_to_disk(str(tmp_path / "ds"))
    docs = sources.open_source(str(tmp_path / "ds"), ByteTokenizer()).load().token_ids
    assert [d.tolist() for d in docs] == [[256, 5, 6, 257], [256, 7, 257]]


def test_pre_tokenized_without_source_is_one_document(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"input_ids": [1, 5, 6, 2, 1, 7, 2]}) + "\n")
    assert [d.tolist() for d in formats.read_token_documents(path).token_ids] == [[1, 5, 6, 2, 1, 7, 2]]
    path.write_text(
        json.dumps({"input_ids": [1, 5, 6, 2, 1, 7, 2], "source": [{"end": 4}, {"start": 4, "end": 7}]}) + "\n"
    )
    assert [d.tolist() for d in formats.read_token_documents(path).token_ids] == [[1, 5, 6, 2], [1, 7, 2]]


@needs_shared
def test_tags_from_the_pre_tokenized_domain_field(tmp_path, llama_tokenizer_dir):
    data = PackedDataModule(
        str(SHARED_DATA / "wikitext2-valid.tokenized.jsonl"),
        tokenizer=llama_tokenizer_dir,
        tag_field="domain",
        seq_len=4096,
        layout="per_doc",
        val_fraction=0.0,
        cache_dir=str(tmp_path),
    )
    data.setup("fit")
    tag = data.tokenizer.encode_batch(["wikitext"])[0]
    row = data.train_rows.row(0)
    assert row.is_tag is not None
    assert row.input_ids[1 : 1 + len(tag)].tolist() == tag  # right after the row's first F
    stats = data.train_rows.stats
    assert stats["tag_tokens"] == len(tag) * stats["chunks"]


def test_default_corpus_size_is_selectable():
    assert len(sources.open_source("default:1000", ByteTokenizer()).load().token_ids) == 1000
    assert generate_documents(1000)[:400] == generate_documents(400), "a larger corpus extends the default one"
    with pytest.raises(sources.UserError, match="default:N"):
        sources.open_source("default:many", ByteTokenizer())


def test_eos_id_ends_text_documents_and_keys_the_cache(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["first text", "second text"]))
    plain = sources.open_source(str(path), ByteTokenizer())
    chosen = sources.open_source(str(path), ByteTokenizer(), eos_id=7)
    assert [int(d[-1]) for d in plain.load().token_ids] == [257, 257]
    assert [int(d[-1]) for d in chosen.load().token_ids] == [7, 7]
    assert plain.fingerprint != chosen.fingerprint


def _pretokenized(tmp_path, first: int, count: int = 6):
    path = tmp_path / f"rows-{first}.jsonl"
    path.write_text("".join(json.dumps({"input_ids": [first, 65, 66, 67, 68, 69] * 3}) + "\n" for _ in range(count)))
    return str(path)


def test_documents_opening_with_a_token_neither_stripped_nor_f_warn_with_the_count(tmp_path):
    data = PackedDataModule(
        _pretokenized(tmp_path, 1), seq_len=64, layout="per_doc", val_fraction=0.0, cache_dir=str(tmp_path / "cache")
    )
    with pytest.warns(
        RunWarning,
        match=r"6 of 6 documents of pre-tokenized .* open with token id 1, which is neither the first token F \(256\)",
    ):
        data.setup("fit")


def test_documents_opening_with_a_special_token_that_is_not_f_are_refused(tmp_path):
    from anchor_lightning.errors import UserError

    data = PackedDataModule(
        _pretokenized(tmp_path, 257), seq_len=64, layout="per_doc", val_fraction=0.0, cache_dir=str(tmp_path / "cache")
    )
    with pytest.raises(UserError, match="open with token id 257.*special token of the tokenizer"):
        data.setup("fit")


def test_documents_opening_with_f_or_a_stripped_bos_pass_quietly(tmp_path, recwarn):
    for first in (256, 65):  # F itself; documents that open with varied content
        path = tmp_path / f"ok-{first}.jsonl"
        lines = [[first + i, 66, 67, 68] for i in range(6)] if first == 65 else [[first, 65, 66, 67]] * 6
        path.write_text("".join(json.dumps({"input_ids": ids}) + "\n" for ids in lines))
        PackedDataModule(
            str(path), seq_len=64, layout="per_doc", val_fraction=0.0, cache_dir=str(tmp_path / f"c{first}")
        ).setup("fit")
    assert not [w for w in recwarn if "open with token id" in str(w.message)]
