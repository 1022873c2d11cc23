"""RULER exactly as NVIDIA/RULER makes and scores it: our samples against the fixtures its own generator
made (``ruler_reference/make_fixtures.py``: release 2024 at commit e40fae1, release 2026 at c3f5e3b),
byte for byte (the prompt's SHA-256), with the same answers and lengths, for every task at 1K and 8K
tokens with the Llama 2 and SmolLM2 tokenizers; our scores against its ``evaluate.py`` on hand-made
predictions."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from anchor_lightning.eval.ruler.keys import SortedPairs
from anchor_lightning.eval.ruler.metrics import sample_score, task_score
from anchor_lightning.eval.ruler.synthetic import generate, zeta
from anchor_lightning.eval.ruler.tasks import QA_DATASETS, TASKS, VERSIONS, task_spec
from tests.conftest import SHARED_DATA, SMOLLM2_GGUF
from tests.eval.ruler_reference import fake_qa

REFERENCE = Path(__file__).with_name("ruler_reference")
FIXTURE_FILES = sorted(REFERENCE.glob("*-*.json.gz"))
FIXTURES = [json.loads(gzip.open(f, "rt").read()) for f in FIXTURE_FILES]
VERSION_OF = {commit[:7]: version for version, commit in VERSIONS.items()}
CASES = [dict(case, version=VERSION_OF[f["ruler_commit"][:7]]) for f in FIXTURES for case in f["cases"]]


@functools.cache
def _tokenizer(name: str, folder: str):
    from transformers import AutoTokenizer

    if name == "llama2":  # the paper's tokenizer, as RULER's hf tokenizer type loads it
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(SHARED_DATA / "llama2-tokenizer.model", Path(folder) / "tokenizer.model")
        return AutoTokenizer.from_pretrained(folder)
    from anchor_lightning.data.tokenizer import load_tokenizer

    return load_tokenizer(str(SMOLLM2_GGUF)).tok  # the GGUF's tokenizer, as the package converts it


def _cases():
    for case in CASES:
        slow = case["length"] > 1024 or case["tokenizer"] != "llama2"
        marks = [pytest.mark.slow] if slow else []
        name = f"{case['version']}-{case['tokenizer']}-{case['task']}-{case['length']}"
        yield pytest.param(case, id=name, marks=marks)


def test_fixtures_cover_every_task_of_both_releases_at_two_lengths_with_two_tokenizers():
    seen = {(c["version"], c["tokenizer"], c["task"], c["length"]) for c in CASES}
    assert all(f["seed"] == 42 for f in FIXTURES)
    for version in VERSIONS:
        for tokenizer in ("llama2", "smollm2"):
            for task in TASKS:
                assert {n for v, t, k, n in seen if (v, t, k) == (version, tokenizer, task)} == {1024, 8192}


@pytest.mark.parametrize("case", list(_cases()))
def test_samples_equal_the_reference_generators(case, tmp_path_factory):
    tokenizer = _tokenizer(case["tokenizer"], str(tmp_path_factory.mktemp("llama2-tokenizer")))
    spec = task_spec(case["task"], version=case["version"])
    qa = None
    if spec.family == "qa":
        qa = fake_qa.write(tmp_path_factory.mktemp("qa"))[QA_DATASETS[case["task"]]]
    expected = case["samples"]
    ours = generate(spec, lambda text: len(tokenizer.tokenize(text)), case["length"], len(expected), qa_data=qa)
    for sample, reference in zip(ours, expected, strict=True):
        assert sample.index == reference["index"]
        assert len(sample.input) == reference["input_chars"]
        assert hashlib.sha256(sample.input.encode()).hexdigest() == reference["input_sha256"]
        assert sample.outputs == reference["outputs"]
        assert sample.length == reference["length"]


def test_scores_equal_the_reference_evaluator():
    cases = json.loads((REFERENCE / "scores-e40fae1.json").read_text())
    assert len(cases) >= 15
    for case in cases:
        metric = task_spec(case["task"]).metric
        ours = task_score([sample_score(case["pred"], case["outputs"], metric)])
        assert ours == case["official_score"], case


def test_word_keys_index_the_sorted_pairs_exactly():
    adjectives = ["far", "far-off", "far-off-ish", "able", "a", "b c", "a-b", "zeta", "able"]
    nouns = ["b-c", "c", "off", "off-ish", "ish", "x", "c"]
    expected = sorted({f"{a}-{n}" for a in adjectives for n in nouns})
    pairs = SortedPairs(adjectives, nouns)
    assert len(pairs) == len(expected)
    assert [pairs[i] for i in range(len(pairs))] == expected
    with pytest.raises(IndexError):
        pairs[len(pairs)]


def test_zeta_is_scipys_at_two_and_converges_elsewhere():
    import math

    assert zeta(2.0) == 1.6449340668482264  # scipy.special.zeta(2.0), bit for bit
    assert abs(zeta(3.0) - 1.2020569031595942) < 1e-15
    assert abs(zeta(1.5) - 2.612375348685488) < 1e-12
    assert math.isfinite(zeta(1.1))
