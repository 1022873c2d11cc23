"""Shared fixtures: tiny random Llama / Mistral / Qwen2 configs and a packed-batch helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from anchor_lightning.data.batch import collate_rows
from anchor_lightning.data.packing import PackingSpec, pack_documents

# the project's real test inputs (../shared/data, ../shared/models); ANCHOR_SHARED_DATA / ANCHOR_SHARED_MODELS
# point elsewhere (the GPU machine)
SHARED_DATA = Path(os.environ.get("ANCHOR_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
SHARED_MODELS = Path(os.environ.get("ANCHOR_SHARED_MODELS", SHARED_DATA.parent / "models"))
SMOLLM2_GGUF = SHARED_MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA2_TOKENIZER = SHARED_DATA / "llama2-tokenizer.model"
needs_smollm2 = pytest.mark.skipif(not SMOLLM2_GGUF.is_file(), reason=f"needs the real GGUF checkpoint {SMOLLM2_GGUF}")
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"needs the shared data {SHARED_DATA}")
# CI (.ci/run) sets ANCHOR_REQUIRE_SHARED=1: there the real inputs must be present, and a test that would
# skip without them stops the run instead (a skip would hide that the real-model tests never ran)
REQUIRE_SHARED = os.environ.get("ANCHOR_REQUIRE_SHARED") == "1"


def missing_shared_inputs() -> list[Path]:
    return [p for p in (SHARED_DATA, SMOLLM2_GGUF, LLAMA2_TOKENIZER) if not p.exists()]


def pytest_sessionstart(session):
    missing = missing_shared_inputs() if REQUIRE_SHARED else []
    if missing:
        pytest.exit(
            f"ANCHOR_REQUIRE_SHARED=1 but the shared test inputs are missing: {', '.join(map(str, missing))} "
            "(set ANCHOR_SHARED_DATA / ANCHOR_SHARED_MODELS)",
            returncode=3,
        )


FIRST = 1  # the tests' anchor / BOS id
VOCAB = 97

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def tiny_config(family: str, **overrides):
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    common.update(overrides)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=8)
    raise ValueError(family)


def packed_batch(documents, seq_len: int, mode: str, layout: str, rows: int | None = None):
    """Pack ``documents`` and collate the first ``rows`` rows (all by default)."""
    packed, _ = pack_documents(documents, PackingSpec(seq_len, layout, FIRST, (FIRST,)))
    packed = packed[:rows] if rows else packed
    return collate_rows(packed, mode, layout), packed


@pytest.fixture(autouse=True, scope="session")
def _conversion_cache(tmp_path_factory):
    """GGUF conversions go to one temporary cache for the whole session (never ~/.cache, never the tree)."""
    previous = os.environ.get("ANCHOR_LIGHTNING_CACHE")
    os.environ["ANCHOR_LIGHTNING_CACHE"] = str(tmp_path_factory.mktemp("anchor-cache"))
    yield
    if previous is None:
        os.environ.pop("ANCHOR_LIGHTNING_CACHE", None)
    else:
        os.environ["ANCHOR_LIGHTNING_CACHE"] = previous


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    """GPU tests are skipped without CUDA (run them on the GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# pytest-xdist's workers share the cores: each takes its share of them for its own math and for the
# processes it starts (on two cores and ``-n 2``, two threads per worker made the whole run 1.2x slower,
# and the README walk's processes 2x slower, than one thread each)
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
