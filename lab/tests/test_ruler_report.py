"""lab/miniature/ruler_report.py on real RULER results (the base SmolLM2-135M, docs/ruler/) and a
stand-in second model made from them with known changes."""

from __future__ import annotations

import copy
import json
import lzma
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anchor_lightning.eval.ruler.metrics import sample_score
from anchor_lightning.eval.ruler.suite import settings_of, summarise
from anchor_lightning.eval.ruler.tasks import task_spec
from lab.miniature import ruler_report

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT / "docs" / "ruler"


def rescored(data: dict) -> dict:
    """A stand-in result made whole as evaluate writes one: each sample's score from its prediction by
    RULER's metric, and the tables from the samples (``check_scores`` refuses anything else)."""
    for sample in data["samples"]:
        metric = task_spec(sample["task"], version=data["version"]).metric
        sample["score"] = sample_score(sample["prediction"], sample["outputs"], metric)
    data["scores"] = summarise(data["samples"], settings_of(data))
    return data


def results(tmp_path: Path) -> Path:
    """base: the four one-length runs as four folders of one model; anchor: the same, with the first 10
    niah_single_1 samples at 16K made right (score 1) and 3 at 4K made wrong."""
    out = tmp_path / "results"
    for n in (4096, 8192, 16384, 32768):
        data = json.loads((RAW / f"base-smollm2-h100-len-{n}.json").read_text())
        (out / "base" / f"ruler-{n}").mkdir(parents=True)
        (out / "base" / f"ruler-{n}" / "ruler.json").write_text(json.dumps(data))
        anchor = copy.deepcopy(data)
        for sample in anchor["samples"]:
            if sample["task"] == "niah_single_1" and sample["index"] < 10 and n == 16384:
                sample["prediction"] = " ".join(sample["outputs"])  # right
            if sample["task"] == "niah_single_1" and sample["index"] < 3 and n == 4096:
                sample["prediction"] = ""  # wrong
        (out / "anchor" / f"ruler-{n}").mkdir(parents=True)
        (out / "anchor" / f"ruler-{n}" / "ruler.json").write_text(json.dumps(rescored(anchor)))
    return out


def test_a_model_measured_a_length_a_run_is_one_row(tmp_path):
    found = ruler_report.gather([results(tmp_path)])
    assert ruler_report.lengths_of(found) == [4096, 8192, 16384, 32768]
    assert len(found.ruler["base"]["samples"]) == 4 * 1100
    table = ruler_report.average_table(found)
    assert (
        table[2]
        == "| base, RoPE 100,000 | 41.65 [38.8, 44.6] | 25.73 [23.2, 28.4] | 0.00 [0.0, 0.3] | 0.00 [0.0, 0.3] |"
    )


def test_the_paired_differences_count_the_changed_samples(tmp_path):
    found = ruler_report.gather([results(tmp_path)])
    base = ruler_report.differences(found)["base"]
    # 10 of 1,100 samples at 16K better by 1: +0.909 points; 3 at 4K worse (the 3 were right for base)
    assert base["16384"]["higher_a"] == 10 and base["16384"]["higher_b"] == 0
    assert abs(100 * base["16384"]["difference"] - 100 * 10 / 1100) < 1e-9
    assert base["4096"]["higher_b"] == 3 and base["8192"]["difference"] == 0
    assert base["beyond"]["samples"] == 2200 and base["beyond"]["higher_a"] == 10
    text = ruler_report.render(found)
    assert "| anchor minus base, RoPE 100,000 | -0.27 [" in text and "| anchor |" in text
    assert "] 0:3 p=" in text and "] 10:0 p=" in text  # the samples each side scored higher on, at 4K and 16K
    assert "SlimPajama-128K at 64K | 70.56 | 70.87 | 73.34 | 77.69 |" in text


def test_more_paired_differences_are_named_a_minus_b(tmp_path, capsys):
    folder = results(tmp_path)
    text = ruler_report.main([str(folder), "--minus", "base:anchor"])
    row = next(line for line in text.splitlines() if line.startswith("| base, RoPE 100,000 minus anchor |"))
    assert "] 3:0 p=" in row and "] 0:10 p=" in row  # the reverse of anchor minus base
    shutil.rmtree(folder / "anchor")  # no anchor: the pair asked for is still there
    (folder / "other").mkdir()
    for n in (4096, 8192, 16384, 32768):
        shutil.copytree(folder / "base" / f"ruler-{n}", folder / "other" / f"ruler-{n}")
    text = ruler_report.main([str(folder), "--minus", "base:other"])
    assert "| base, RoPE 100,000 minus other | +0.00 [" in text and "anchor not evaluated" not in text
    with pytest.raises(SystemExit):
        ruler_report.main([str(folder), "--minus", "base:full"])
    assert "--minus base:full: full has no RULER results here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ruler_report.main([str(folder), "--minus", "base"])
    assert "give each pair as A:B" in capsys.readouterr().err


def test_the_command_writes_the_markdown(tmp_path):
    out = tmp_path / "table.md"
    ruler_report.main([str(results(tmp_path)), "--out", str(out)])
    assert out.read_text().startswith("RULER average (0-100, [95% interval]), RULER (offline set, 11 tasks, no QA)")


def test_a_single_result_file_joins_as_the_named_model_and_each_card_is_named(tmp_path):
    folder = results(tmp_path)
    theta = json.loads((RAW / "base-smollm2-h100-len-4096.json").read_text())
    theta["device"], theta["rope_parameters"] = "NVIDIA H200", {"rope_theta": 2236068.0}
    (tmp_path / "theta.json").write_text(json.dumps(theta))
    anchor_4k = folder / "anchor" / "ruler-4096" / "ruler.json"
    anchor_4k.with_suffix(".json.xz").write_bytes(lzma.compress(anchor_4k.read_bytes()))  # as docs/ keeps them
    anchor_4k.unlink()
    assert sorted(ruler_report.gather([folder]).ruler["anchor"]["scores"]) == ["16384", "32768", "4096", "8192"]
    out = tmp_path / "table.md"
    ruler_report.main([str(folder), "--result", f"base-theta={tmp_path / 'theta.json'}", "--out", str(out)])
    text = out.read_text()
    assert "| base, RoPE 2,236,068 (untrained) | 41.65 [38.8, 44.6] | - | - | - |" in text
    assert (
        "Cards: base, RoPE 100,000, anchor: NVIDIA H100 80GB HBM3; base, RoPE 2,236,068 (untrained): NVIDIA H200."
        in text
    )


def test_a_result_that_is_not_a_file_stops_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ruler_report.main([str(results(tmp_path)), "--result", f"full={tmp_path / 'missing.json'}"])
    assert "give MODEL=PATH of an existing ruler.json" in capsys.readouterr().err


def test_each_trained_mode_names_the_card_it_trained_on(tmp_path):
    folder = results(tmp_path)
    cost = {"mode": "anchor", "steps": 100, "tokens": 13094407.0, "tokens_per_sec_median": 124644.0}
    cost |= {"wall_seconds": 158.0, "peak_gib": 44.5, "val_loss": 1.842}
    (folder / "anchor" / "train.json").write_text(json.dumps(cost))  # no device: the card of its RULER run
    (folder / "full").mkdir()
    (folder / "full" / "train.json").write_text(json.dumps(cost | {"mode": "full", "device": "NVIDIA H200"}))
    rows = ruler_report.training_table(ruler_report.gather([folder]))
    assert rows[0].endswith("| val/loss | card | rows |")
    assert rows[2] == "| full | 100 | 13.1M | 124,644 | 158 s | 44.5 | 1.842 | NVIDIA H200 | - |"
    assert rows[3] == "| anchor | 100 | 13.1M | 124,644 | 158 s | 44.5 | 1.842 | NVIDIA H100 80GB HBM3 | - |"


def test_the_report_says_whether_the_modes_trained_on_the_same_rows(tmp_path):
    """train.json's ``rows`` (the data module's state in the checkpoint): the same data and packing under
    every mode is one digest, whatever the seed (which only orders the rows); other data is called out."""
    rows = {
        "rows": 998,
        "rows_per_step": 4,
        "seed": 0,
        "identity": {"train": "abc/holdout=0", "packing": {"seq_len": 32768}},
    }
    folder = tmp_path / "results"
    for mode, seed in (("anchor", 0), ("full", 0), ("anchor-seed1", 1), ("intra_doc", 0)):
        (folder / mode).mkdir(parents=True)
        cost = {"mode": mode, "steps": 100, "tokens": 13e6, "wall_seconds": 250.0, "rows": rows | {"seed": seed}}
        if mode == "intra_doc":
            del cost["rows"]  # an older run, which did not record them
        (folder / mode / "train.json").write_text(json.dumps(cost))
    found = ruler_report.gather([folder])
    digest = ruler_report.rows_digest(found.train["anchor"])
    assert digest is not None and len(digest) == 8 and digest == ruler_report.rows_digest(found.train["anchor-seed1"])
    table = "\n".join(ruler_report.training_table(found))
    assert f"| anchor | 100 | 13.0M | - | 250 s | - | - | ? | `{digest}`, seed 0 |" in table
    assert f"| anchor-seed1 | 100 | 13.0M | - | 250 s | - | - | ? | `{digest}`, seed 1 |" in table
    assert "| intra_doc | 100 | 13.0M | - | 250 s | - | - | ? | - |" in table
    assert ruler_report.rows_line(found) == (
        f"Rows: full, anchor, anchor-seed1 trained on the same rows (`{digest}`) (intra_doc did not record theirs)."
    )
    other = rows | {"identity": {"train": "xyz/holdout=0", "packing": {"seq_len": 32768}}}
    (folder / "full" / "train.json").write_text(
        json.dumps({"mode": "full", "steps": 1, "tokens": 1, "wall_seconds": 1, "rows": other})
    )
    line = ruler_report.rows_line(ruler_report.gather([folder]))
    assert line is not None and "different rows" in line and "they do not compare" in line
    assert "Rows: " in ruler_report.render(ruler_report.gather([folder]))


def test_the_figure_is_drawn_from_the_same_results(tmp_path):
    folder = results(tmp_path)
    png = tmp_path / "ruler.png"
    ruler_report.main([str(folder), "--out", str(tmp_path / "t.md"), "--figure", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    only_base = tmp_path / "only"
    (only_base / "base").mkdir(parents=True)
    (folder / "base").rename(only_base / "base")  # no anchor: one panel, no differences
    ruler_report.figure(ruler_report.gather([only_base]), tmp_path / "one.png")
    assert (tmp_path / "one.png").stat().st_size > 10_000


def test_a_second_seed_is_its_own_row_and_its_spread_is_reported(tmp_path):
    folder = results(tmp_path)
    (folder / "anchor").rename(folder / "anchor-seed1")
    shutil.copytree(folder / "base", folder / "anchor")  # seed 0: the base model's scores
    found = ruler_report.gather([folder])
    assert ruler_report.models_of(found) == ["base", "anchor", "anchor-seed1"]
    assert ruler_report.seed_pairs(found) == [("anchor", "anchor-seed1")]
    text = ruler_report.render(found)
    assert "Seed to seed (one recipe, another row order" in text
    # seed 0 minus seed 1: 10 samples at 16K lower, 3 at 4K higher
    assert "| anchor minus anchor-seed1 | +0.27 [" in text and "| anchor-seed1 |" in text


def test_two_modes_over_two_seeds_average_each_sample_then_pair(tmp_path):
    folder = results(tmp_path)  # anchor: base with 10 samples at 16K right, 3 at 4K wrong
    shutil.copytree(folder / "base", folder / "full")
    shutil.copytree(folder / "base", folder / "full-seed1")
    shutil.copytree(folder / "base", folder / "anchor-seed1")  # seed 1: anchor no different from full
    found = ruler_report.gather([folder])
    seeds, by = ruler_report.over_seeds(found, "anchor", "full")
    assert seeds == ["0", "1"]
    # half of seed 0's difference: 10 samples at 16K up by 0.5 each, 3 at 4K down by 0.5
    assert abs(100 * by["16384"]["difference"] - 100 * 5 / 1100) < 1e-9 and by["16384"]["higher_a"] == 10
    assert by["4096"]["higher_b"] == 3 and by["beyond"]["samples"] == 2200
    assert ruler_report.over_seeds(found, "anchor", "base") is None  # one common row order
    text = ruler_report.render(found)
    assert "| anchor minus full, seeds 0, 1 | -0.14 [" in text and "+0.45 [" in text
    # over trainings: seed 0's difference and seed 1's (none), their mean and a t interval on 1 df
    trained = ruler_report.over_trainings(found, "anchor", "full")
    mean, low, high, each = trained["16384"]
    assert each == pytest.approx([100 * 10 / 1100, 0.0]) and mean == pytest.approx(100 * 5 / 1100)
    assert high - mean == pytest.approx(12.7062 * (100 * 10 / 1100) / 2, rel=1e-4)
    assert "| anchor minus full, 2 seeds | -0.14 [" in text
    # the main table pairs each model with the anchor of its own row order only
    assert "| anchor minus full |" in text and "anchor minus full-seed1" not in text


def test_a_second_seed_of_a_variant_pairs_with_the_variant():
    assert ruler_report.first_seed("anchor-seed1-fp8") == "anchor-fp8"
    assert ruler_report.first_seed("intra_doc_reset-seed12") == "intra_doc_reset"
    assert ruler_report.first_seed("base-theta") == "base-theta"
    assert ruler_report.first_seed("anchor-seedless") == "anchor-seedless"
    found = ruler_report.Gathered()
    found.ruler.update({m: {} for m in ("anchor-seed1-fp8", "anchor", "anchor-fp8", "anchor-seed1", "full")})
    assert ruler_report.models_of(found) == ["full", "anchor", "anchor-fp8", "anchor-seed1", "anchor-seed1-fp8"]
    assert ruler_report.seed_pairs(found) == [("anchor", "anchor-seed1"), ("anchor-fp8", "anchor-seed1-fp8")]


def test_results_of_other_samples_are_refused_in_one_line(tmp_path, capsys):
    folder = results(tmp_path)
    path = folder / "anchor" / "ruler-8192" / "ruler.json"
    data = json.loads(path.read_text())
    data["samples"][0]["outputs"] = ["not the same needle"]
    path.write_text(json.dumps(rescored(data)))
    with pytest.raises(SystemExit):
        ruler_report.main([str(folder)])
    err = capsys.readouterr().err
    assert "field 'anchor minus base'" in err and "(1 differ, the first" in err and "cannot be paired" in err


def test_two_runs_filed_under_one_name_are_refused_and_a_repeat_is_not(tmp_path, capsys):
    folder = results(tmp_path)
    again = tmp_path / "again"
    shutil.copytree(folder / "anchor", again / "anchor")
    assert len(ruler_report.gather([folder, again]).ruler["anchor"]["samples"]) == 4 * 1100  # the same run twice
    path = again / "anchor" / "ruler-4096" / "ruler.json"
    data = json.loads(path.read_text())
    data["samples"][5]["prediction"] = "another model's words"
    path.write_text(json.dumps(rescored(data)))
    with pytest.raises(SystemExit):
        ruler_report.main([str(folder), str(again)])
    err = capsys.readouterr().err
    assert "field 'anchor (" in err and "1 samples predicted otherwise" in err and "name them apart" in err


def test_the_callbacks_evaluations_during_training_are_tabled_with_their_mean_of_five(tmp_path):
    folder = results(tmp_path)
    curves = {  # as callbacks/ruler.py logs them (the mix-32k anchor run's, 2026-12-07)
        "ruler/avg/32768": [[60, 16.65], [70, 14.05], [80, 15.85], [90, 15.65], [100, 14.65]],
        "ruler/avg_last5/32768": [[60, 16.65], [70, 15.35], [80, 15.52], [90, 15.55], [100, 15.37]],
        "ruler/vt/32768": [[60, 17.6], [100, 13.6]],
        "ruler/niah_single_2/32768": [[60, 20.0], [100, 20.0]],
        "ruler/seconds": [[60, 48.6]],
        "train/loss": [[4, 2.1]],
    }
    cost = {"mode": "anchor", "steps": 100, "tokens": 13078698.0, "wall_seconds": 254.1, "curves": curves}
    (folder / "anchor" / "train.json").write_text(json.dumps(cost))
    found = ruler_report.gather([folder])
    assert ruler_report.during_training(found)["anchor"] == {
        "length": 32768,
        "steps": [60, 70, 80, 90, 100],
        "scores": [16.65, 14.05, 15.85, 15.65, 14.65],
        "mean_last5": 15.37,
        "tasks": ["niah_single_2", "vt"],
    }
    rows = ruler_report.during_training_table(found)
    assert rows[2] == (
        "| anchor | 32K | 60, 70, 80, 90, 100 | 16.6 / 14.1 / 15.8 / 15.7 / 14.7 | 15.37 | `niah_single_2`, `vt` |"
    )
    assert "RULER during training" in ruler_report.render(found)
    (folder / "anchor" / "train.json").write_text(json.dumps(cost | {"curves": {"train/loss": [[4, 2.1]]}}))
    assert "RULER during training" not in ruler_report.render(ruler_report.gather([folder]))


def test_training_results_alone_render_their_tables_and_nothing_else_is_refused(tmp_path, capsys):
    """A mode trained but not yet evaluated (its train.json, no ruler.json) still gets its training and
    during-training tables; a folder with neither, or a figure without RULER results, stops in one line."""
    folder = tmp_path / "results"
    (folder / "anchor").mkdir(parents=True)
    curves = {"ruler/avg/32768": [[60, 16.65]], "ruler/avg_last5/32768": [[60, 16.65]], "ruler/vt/32768": [[60, 17.6]]}
    cost = {"mode": "anchor", "steps": 100, "tokens": 13078698.0, "wall_seconds": 254.1, "curves": curves}
    (folder / "anchor" / "train.json").write_text(json.dumps(cost | {"device": "NVIDIA H100 80GB HBM3"}))
    text = ruler_report.main([str(folder)])
    assert text.startswith("Training:\n")
    assert "| anchor | 100 | 13.1M | - | 254 s | - | - | NVIDIA H100 80GB HBM3 |" in text
    assert "| anchor | 32K | 60 | 16.6 | 16.65 | `vt` |" in text
    assert "RULER average" not in text and "Paired differences" not in text
    with pytest.raises(SystemExit):
        ruler_report.main([str(folder), "--figure", str(tmp_path / "f.png")])
    assert "--figure draws RULER results" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        ruler_report.main([str(tmp_path / "empty")])
    assert "no MODEL/ruler/ruler.json or MODEL/train.json" in capsys.readouterr().err


def documented_commands() -> list[str]:
    """The shell blocks of docs/miniature.md that write a tables file under docs/miniature/."""
    text = (ROOT / "docs" / "miniature.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [b for b in blocks if "ruler_report.py" in b and "--out docs/miniature/" in b]


@pytest.mark.parametrize("command", documented_commands(), ids=lambda c: re.search(r"--out (\S+)", c).group(1))
def test_the_filed_tables_are_what_the_documented_command_makes_of_the_raw_results(command, tmp_path):
    filed = ROOT / re.search(r"--out (\S+)", command).group(1)
    run = re.sub(r"--out \S+", f"--out {tmp_path / 'tables.md'}", command)
    run = re.sub(r"--figure \S+", f"--figure {tmp_path / 'figure.png'}", run)
    subprocess.run(["bash", "-ec", run.replace("python ", f"{sys.executable} ", 1)], cwd=ROOT, check=True)
    assert (tmp_path / "tables.md").read_text() == filed.read_text(), f"{filed} is stale: run its command again"


def test_both_ruler_comparisons_have_their_documented_command():
    assert {re.search(r"--out (\S+)", c).group(1) for c in documented_commands()} == {
        "docs/miniature/ruler-long-32k/tables.md",
        "docs/miniature/ruler-mix-32k/tables.md",
    }


def test_a_result_whose_scores_do_not_follow_from_its_predictions_is_refused(tmp_path, capsys):
    folder = results(tmp_path)
    path = folder / "anchor" / "ruler-16384" / "ruler.json"
    data = json.loads(path.read_text())
    data["samples"][20]["score"] = 1.0 - data["samples"][20]["score"]  # a score set by hand
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit):
        ruler_report.main([str(folder)])
    err = capsys.readouterr().err
    assert f"{path}: field 'anchor':" in err and "changed after evaluate wrote it" in err, err
