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
    options = dict(lengths=(1024, 2048), depths=(0.0, 0.25, 0.5, 0.75, 1.0), trials=2, candidates=10)
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
        else:  # hard negatives: every candidate is a value of some needle in the prompt
            text = bytes(t for t in trial.prompt if t < 256).decode()
            assert all(f" is {value_of(c)}." in text for c in trial.candidates)
            assert len(found) == (1 if trial.task == "multikey" else 4)


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


def test_a_model_that_cannot_tell_candidates_apart_scores_nothing():
    """Equal scores for every candidate (a broken model's constant output) are a miss, not the first
    candidate, which is the right one in about a tenth of the trials."""

    class Constant:
        def loglikelihoods(self, prompt, continuations):
            return [-1.0] * len(continuations)

    built = trials()
    assert any(0 in t.answers for t in built)  # where picking the first candidate would score
    summary = summarise(built, run_trials(Constant(), built, progress=False))
    assert all(r["accuracy"] == 0.0 for r in summary.values()), summary


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


def test_evaluate_command_writes_json_and_heat_map(tmp_path, capsys, monkeypatch):
    from anchor_lightning.commands import evaluate, main
    from anchor_lightning.eval import report
    from tests.helpers import record_whole_writes

    whole = record_whole_writes(monkeypatch, evaluate, report)

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=258)).save_pretrained(tmp_path / "model")
    main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "model"),
            "--data",
            "default:60",
            "--lengths",
            "512",
            "--depths",
            "0",
            "1",
            "--trials",
            "2",
            "--candidates",
            "4",
            "--dtype",
            "float32",
            "--out",
            str(tmp_path / "eval"),
            "--no-progress",
        ]
    )
    results = json.loads((tmp_path / "eval" / "long_context.json").read_text())
    assert set(results["niah"]) == set(TASKS) and results["niah"]["single"]["trials"] == 4
    assert results["perplexity_by_position"][0]["start"] == 0
    assert (tmp_path / "eval" / "niah_heatmap.png").is_file()
    assert sorted(whole) == sorted(p.name for p in (tmp_path / "eval").iterdir())  # each whole or not at all
    assert "chance 25%" in capsys.readouterr().out


def test_callback_logs_needle_accuracy_and_perplexity_during_validation(tmp_path, monkeypatch):
    import yaml

    from anchor_lightning.callbacks import long_context
    from anchor_lightning.commands import main
    from anchor_lightning.model.kernels import without_new_graphs
    from tests.test_cli import scalars

    entered = []  # its evaluation compiles no graph of its own (model/kernels.py)
    monkeypatch.setattr(long_context, "without_new_graphs", lambda: entered.append(1) or without_new_graphs())

    fragment = tmp_path / "eval.yaml"
    fragment.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [
                        {
                            "class_path": "anchor_lightning.callbacks.long_context.LongContextEval",
                            "init_args": {
                                "lengths": [512],
                                "depths": [0.0, 1.0],
                                "trials": 1,
                                "candidates": 4,
                                "ppl_documents": 2,
                            },
                        }
                    ]
                }
            }
        )
    )
    main(
        [
            "fit",
            "--config",
            "tests/configs/micro.yaml",
            "--config",
            str(fragment),
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=4",
            f"--data.cache_dir={tmp_path / 'cache'}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        ]
    )
    logged = scalars(tmp_path / "runs")
    for task in TASKS:
        assert 0.0 <= logged[f"eval/niah_{task}"][-1][1] <= 1.0
    assert any(tag.startswith("eval/ppl_0_") for tag in logged)
    assert entered == [1]


def test_wilson_interval_matches_known_values():
    from anchor_lightning.eval.stats import wilson_interval

    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    low, high = wilson_interval(50, 100)
    assert (low, high) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_t_quantiles_and_intervals_match_the_tables():
    from anchor_lightning.eval.stats import mean_t_interval, t_quantile

    # Student's t, 97.5% quantile, from any table: 12.706 (1 df), 4.303 (2), 2.776 (4), 2.042 (30)
    assert [t_quantile(0.975, df) for df in (1, 2, 4, 30)] == pytest.approx([12.7062, 4.3027, 2.7764, 2.0423], abs=2e-4)
    assert t_quantile(0.95, 10) == pytest.approx(1.8125, abs=2e-4)
    mean, low, high = mean_t_interval([-1.26, -0.91])  # two trainings: mean +- 12.706 x sd / sqrt(2)
    assert mean == pytest.approx(-1.085) and high - mean == pytest.approx(12.7062 * 0.35 / 2, abs=1e-3)
    assert mean_t_interval([3.0])[1:] == (float("-inf"), float("inf"))
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)


def test_paired_comparison_counts_discordant_trials_and_gives_mcnemars_exact_p():
    from anchor_lightning.eval.stats import paired_comparison

    a = [True] * 5 + [True, False, False]
    b = [False] * 5 + [True, False, False]
    result = paired_comparison(a, b)
    assert (result["only_a"], result["only_b"]) == (5, 0)
    assert result["difference"] == pytest.approx(5 / 8)
    assert result["p_value"] == pytest.approx(2 / 32)  # two-sided exact binomial on 5 discordant trials
    # 95% interval of the paired difference: 5/8 +- 1.96 sqrt(5 - 5^2/8) / 8
    half = 1.959964 * (5 - 25 / 8) ** 0.5 / 8
    assert (result["difference_low"], result["difference_high"]) == pytest.approx((5 / 8 - half, 5 / 8 + half))
    same = paired_comparison(a, a)
    assert same["p_value"] == 1.0 and same["difference_low"] == same["difference_high"] == 0.0
    # 600 trials, 10 right only by a and 18 only by b: -1.3% [-3.1%, +0.4%]
    many = paired_comparison([True] * 10 + [False] * 18 + [True] * 572, [False] * 10 + [True] * 18 + [True] * 572)
    assert many["difference_low"] == pytest.approx(-0.0306, abs=5e-4)
    assert many["difference_high"] == pytest.approx(0.0039, abs=5e-4)
    with pytest.raises(ValueError):
        paired_comparison(a, b[:-1])


def test_bootstrap_interval_brackets_the_ratio_and_is_flat_for_one_document():
    from anchor_lightning.eval.stats import bootstrap_ratio_interval

    rng = np.random.default_rng(0)
    sums, counts = np.array([10.0, 30.0, 20.0, 40.0]), np.array([10, 10, 10, 10])
    low, high = bootstrap_ratio_interval(sums, counts, 2000, rng)
    assert low < 2.5 < high and 1.0 <= low and high <= 4.0
    assert bootstrap_ratio_interval(sums[:1], counts[:1], 100, rng) == (1.0, 1.0)


def test_summary_gives_accuracy_per_length_with_an_interval_and_every_trials_outcome():
    built = trials(trials=3)
    summary = summarise(built, run_trials(ShallowOnly(), built, progress=False))
    for _task, r in summary.items():
        assert set(r["by_length"]) == {"1024", "2048"}
        for n, cell in r["by_length"].items():
            outcomes = [h for h, length in zip(r["hits"], r["trial_lengths"]) if length == int(n)]
            assert cell["trials"] == len(outcomes) == 15 and cell["accuracy"] == pytest.approx(np.mean(outcomes))
            assert cell["low"] <= cell["accuracy"] <= cell["high"]
        assert len(r["hits"]) == r["trials"] == 30


def test_chunked_token_losses_equal_one_full_forward():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=258)).eval().double()
    ids = [256] + encode("a document long enough to span several chunks of the output head")
    losses = HFScorer(model, chunk=7).token_losses(ids)
    with torch.no_grad():
        logprobs = F.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].double(), -1)
    expected = -logprobs.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()
    np.testing.assert_allclose(losses, expected, rtol=1e-6)


def test_evaluate_command_takes_a_rope_base_and_separate_perplexity_corpora(tmp_path, capsys):
    from anchor_lightning.commands import main

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=258)).save_pretrained(tmp_path / "model")
    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps({"text": t}) + "\n" for t in generate_documents(5)))
    main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "model"),
            "--data",
            "default:60",
            "--ppl-data",
            "default:8",
            "--short-data",
            str(short),
            "--short-length",
            "64",
            "--lengths",
            "512",
            "--depths",
            "0.5",
            "--trials",
            "1",
            "--candidates",
            "4",
            "--rope-theta",
            "123456",
            "--dtype",
            "float32",
            "--out",
            str(tmp_path / "eval"),
            "--no-progress",
        ]
    )
    results = json.loads((tmp_path / "eval" / "long_context.json").read_text())
    assert results["rope_parameters"]["rope_theta"] == 123456.0
    assert results["short_perplexity"]["documents"] == 5 and results["short_perplexity"]["tokens"] == 5 * 64
    assert results["perplexity_by_position"][0]["documents"] == 4
    assert "short-context ppl" in capsys.readouterr().out
    assert results["niah_version"] == 2 and set(results["seconds"]) >= {
        "niah_512",
        "perplexity_by_position",
        "short_perplexity",
    }


def test_default_lengths_follow_the_model_and_the_device():
    from anchor_lightning.eval.suite import default_lengths

    assert default_lengths(32768, "cuda") == [8192, 16384, 32768]
    assert default_lengths(32768, "cpu") == [1024, 2048, 4096]
    assert default_lengths(512, "cpu") == [128, 256, 512]


def test_batched_prompts_score_as_one_prompt_at_a_time():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=258)).eval().double()
    scorer = HFScorer(model)
    prompts = [[256] + encode(f"the harbour bell rang {n} times") for n in ("two", "six", "ten")]
    options = [[encode(" 1234567."), encode(" 7654321."), encode(" x")] for _ in prompts]
    together = scorer.batch_loglikelihoods(prompts, options)
    for prompt, choice, scores in zip(prompts, options, together):
        assert scores == pytest.approx(scorer.loglikelihoods(prompt, choice), abs=1e-9)
    with pytest.raises(ValueError, match="one prompt length"):
        scorer.batch_loglikelihoods([prompts[0], prompts[0][:-1]], options[:2])


def test_batched_trials_give_the_same_outcomes_as_single_ones():
    torch.manual_seed(0)
    scorer = HFScorer(AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=258)).eval().double())
    built = trials(lengths=(1024,), depths=(0.0, 1.0), trials=2)

    class OneAtATime:
        def loglikelihoods(self, prompt, continuations):
            return scorer.loglikelihoods(prompt, continuations)

    assert run_trials(scorer, built, progress=False, batch_tokens=3000) == run_trials(
        OneAtATime(), built, progress=False
    )
