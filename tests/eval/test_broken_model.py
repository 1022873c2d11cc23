"""A broken model is never scored: a NaN weight, or outputs that overflow, stop every evaluation with one
line, where the needles used to score at chance, RULER near zero and perplexity NaN, each with exit code
0 (and the diagnostic ran for minutes, then failed in its plots)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from anchor_lightning.data.tokenizer import ByteTokenizer
from anchor_lightning.errors import UserError
from anchor_lightning.eval.scoring import HFScorer
from tests.conftest import tiny_config
from tests.test_user_errors import one_error


def export(folder: Path, spoil) -> Path:
    """A tiny Llama spoiled by ``spoil(model)``, saved with its tokenizer."""
    torch.manual_seed(0)
    config = tiny_config("llama", vocab_size=258, max_position_embeddings=4096, bos_token_id=256, eos_token_id=257)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        spoil(model)
    model.save_pretrained(folder)
    ByteTokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """One NaN weight: a broken checkpoint."""
    return export(
        tmp_path_factory.mktemp("broken") / "model",
        lambda m: m.model.layers[0].mlp.down_proj.weight[0].fill_(float("nan")),
    )


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory) -> Path:
    """Every weight finite, the logits not: a final norm of 3e38 overflows float32."""
    return export(tmp_path_factory.mktemp("overflowing") / "model", lambda m: m.model.norm.weight.fill_(3e38))


@pytest.mark.parametrize("verb", [["evaluate"], ["evaluate", "--suite", "ruler"], ["diagnose"]])
def test_a_checkpoint_with_a_nan_weight_is_refused_before_any_work(broken, capsys, tmp_path, verb):
    line = one_error(capsys, [*verb, "--model", str(broken), "--lengths", "1024", "--out", str(tmp_path / "out")])
    assert f"{broken}: the model's weights in model.layers.0.mlp.down_proj.weight are not finite" in line, line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_needle_suite_refuses_a_model_whose_log_likelihoods_overflow(overflowing, capsys, tmp_path):
    line = one_error(capsys, ["evaluate", "--model", str(overflowing), "--lengths", "1024", "--trials", "5",
                              "--no_progress", "--out", str(tmp_path / "out")])  # fmt: skip
    assert "log-likelihoods at 1,024 tokens are not finite: the model is broken" in line, line
    assert not (tmp_path / "out" / "long_context.json").exists()


def test_ruler_refuses_a_model_whose_logits_overflow(overflowing, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ANCHOR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    line = one_error(capsys, ["evaluate", "--suite", "ruler", "--model", str(overflowing), "--tasks", "niah_single_1",
                              "--lengths", "1024", "--samples", "2", "--workers", "1", "--no_progress",
                              "--out", str(tmp_path / "out")])  # fmt: skip
    assert "logits after a" in line and "prefill are not finite: the model is broken" in line, line
    assert not (tmp_path / "out" / "ruler.json").exists()


def test_perplexity_refuses_a_model_whose_losses_overflow(overflowing):
    scorer = HFScorer(LlamaForCausalLM.from_pretrained(overflowing))
    with pytest.raises(UserError, match="token losses over a 64-token document are not finite"):
        scorer.token_losses(list(range(64)))
