"""Long-context evaluation with stub scorers written for the test, and the real scorer's arithmetic."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from anchor_lightning.data.default_corpus import generate_documents
from anchor_lightning.data.tokenizer import ByteTokenizer
from anchor_lightning.eval.niah import TASKS, build_trials
from anchor_lightning.eval.report import heat_map, run_trials, summarise
from anchor_lightning.eval.scoring import HFScorer, perplexity_by_position
from tests.conftest import tiny_config

TOKENIZER = ByteTokenizer()
HAYSTACK = np.concatenate([np.array(ids) for ids in TOKENIZER.encode_batch(generate_documents(60))])


def encode(text: str) -> list[int]:
    return TOKENIZER.encode_batch([text])[0]


def needles(prompt: list[int]) -> list[tuple[str, float]]:
    """What an oracle reads in the prompt: each value given for the asked key, and its depth (0..1)
    within the haystack text (the needle itself and the question excluded)."""
    text = bytes(t for t in prompt if t < 256).decode()
    asked = re.search(r"What is the special magic number for (\w+)\?", text).group(1)
    end = text.index("\nWhat is the special")
    found = list(re.finditer(rf"The special magic number for {asked} is (\d+)\.", text))
    return [(m.group(1), m.start() / (end - len(m.group(0)) - 1)) for m in found]


def value_of(candidate: list[int]) -> str:
    return bytes(candidate).decode().strip(" .")


class Oracle:
    def loglikelihoods(self, prompt, continuations):
        values = {v for v, _ in needles(prompt)}
        return [0.0 if value_of(c) in values else -10.0 for c in continuations]


class Random:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def loglikelihoods(self, prompt, continuations):
        return self.rng.normal(size=len(continuations)).tolist()


class ShallowOnly(Oracle):
    """Finds needles in the first half of the context only."""

    def __init__(self) -> None:
        self.random = Random(1)

    def loglikelihoods(self, prompt, continuations):
        if needles(prompt)[0][1] < 0.5:
            return super().loglikelihoods(prompt, continuations)
        return self.random.loglikelihoods(prompt, continuations)


def trials(**kw):
    options = dict(lengths=(512, 1024), depths=(0.0, 0.25, 0.5, 0.75, 1.0), trials=2, candidates=10)
    options.update(kw)
    return build_trials(HAYSTACK, encode, TOKENIZER.bos_token_id, **options)


def test_trials_have_the_requested_length_one_right_answer_and_the_needle_at_its_depth():
    built = trials()
    assert {t.task for t in built} == set(TASKS)
    for trial in built:
        assert len(trial.prompt) == trial.length and trial.prompt[0] == TOKENIZER.bos_token_id
        assert len(trial.candidates) == 10 and len(trial.answers) == 1
        assert len({tuple(c) for c in trial.candidates}) == 10
        found = needles(trial.prompt)
        assert value_of(trial.candidates[next(iter(trial.answers))]) in {v for v, _ in found}
        wrong = [value_of(c) for i, c in enumerate(trial.candidates) if i not in trial.answers]
        assert not {v for v, _ in found} & set(wrong)
        if trial.task == "single":
            assert len(found) == 1 and abs(found[0][1] - trial.depth) < 0.01


def test_a_model_that_always_knows_the_needle_scores_100_percent():
    built = trials()
    summary = summarise(built, run_trials(Oracle(), built, progress=False))
    assert all(r["accuracy"] == 1.0 for r in summary.values())


def test_a_random_model_scores_chance_within_3_standard_errors():
    built = trials(trials=14)  # 3 tasks x 2 lengths x 5 depths x 14 = 420 trials, 140 per task
    summary = summarise(built, run_trials(Random(), built, progress=False))
    total = sum(r["trials"] for r in summary.values())
    accuracy = sum(r["accuracy"] * r["trials"] for r in summary.values()) / total
    assert total >= 200
    assert abs(accuracy - 0.1) <= 3 * np.sqrt(0.1 * 0.9 / total), accuracy


def test_a_depth_biased_model_shows_in_the_heat_map_rows(tmp_path):
    built = trials(tasks=("single",), trials=6)
    summary = summarise(built, run_trials(ShallowOnly(), built, progress=False))["single"]
    grid = np.asarray(summary["grid"])  # rows: depths 0, .25, .5, .75, 1
    assert (grid[:2] == 1.0).all() and grid[3:].mean() < 0.5
    path = heat_map({"single": summary}, tmp_path / "map.png")
    assert path.stat().st_size > 10_000


def test_the_cached_scorer_equals_one_full_forward_per_candidate():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=258)).eval().double()
    prompt = [256] + encode("the harbour bell rang twice")
    candidates = [encode(" 1234567."), encode(" 7654321."), encode(" x")]
    scores = HFScorer(model).loglikelihoods(prompt, candidates)
    for score, cand in zip(scores, candidates):
        ids = torch.tensor([prompt + cand])
        with torch.no_grad():
            logprobs = F.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        expected = sum(logprobs[len(prompt) - 1 + k, t].item() for k, t in enumerate(cand))
        assert score == pytest.approx(expected, abs=1e-9)


def test_perplexity_by_position_is_token_weighted_per_bucket():
    losses = [np.full(700, np.log(4.0)), np.concatenate([np.full(256, np.log(2.0)), np.full(44, np.log(8.0))])]
    buckets = perplexity_by_position(losses)
    assert [(b["start"], b["end"]) for b in buckets] == [(0, 256), (256, 512), (512, 700)]
    assert buckets[0]["ppl"] == pytest.approx(np.sqrt(8.0)) and buckets[0]["tokens"] == 512
    assert buckets[2]["ppl"] == pytest.approx(4.0) and buckets[2]["tokens"] == 188


def test_evaluate_command_writes_json_and_heat_map(tmp_path, capsys):
    from anchor_lightning.cli import main

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=258)).save_pretrained(tmp_path / "model")
    main(["evaluate", "--model", str(tmp_path / "model"), "--data", "default:60", "--lengths", "512", "--depths", "0", "1",
          "--trials", "2", "--candidates", "4", "--dtype", "float32", "--out", str(tmp_path / "eval"), "--no-progress"])
    results = json.loads((tmp_path / "eval" / "long_context.json").read_text())
    assert set(results["niah"]) == set(TASKS) and results["niah"]["single"]["trials"] == 4
    assert results["perplexity_by_position"][0]["start"] == 0
    assert (tmp_path / "eval" / "niah_heatmap.png").is_file()
    assert "chance 25%" in capsys.readouterr().out


def test_callback_logs_needle_accuracy_and_perplexity_during_validation(tmp_path):
    import yaml

    from anchor_lightning.cli import main
    from tests.test_cli import scalars

    fragment = tmp_path / "eval.yaml"
    fragment.write_text(yaml.safe_dump({"trainer": {"callbacks": [{
        "class_path": "anchor_lightning.callbacks.long_context.LongContextEval",
        "init_args": {"lengths": [384], "depths": [0.0, 1.0], "trials": 1, "candidates": 4, "ppl_documents": 2}}]}}))
    main(["fit", "--config", "tests/configs/micro.yaml", "--config", str(fragment), "--trainer.max_steps=4",
          "--trainer.val_check_interval=4", f"--data.cache_dir={tmp_path / 'cache'}",
          f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"])
    logged = scalars(tmp_path / "runs")
    for task in TASKS:
        assert 0.0 <= logged[f"eval/niah_{task}"][-1][1] <= 1.0
    assert any(tag.startswith("eval/ppl_0_") for tag in logged)
