"""lab/miniature/file_bundle.py: a call's result bundle filed into a docs folder, compressed, with the
card and log; a model filed already refused unless asked."""

from __future__ import annotations

import json
import lzma
import tarfile
from pathlib import Path

import pytest

from anchor_lightning.errors import UserError
from lab.miniature import file_bundle, ruler_report

ROOT = Path(__file__).resolve().parents[2]


def call_files(tmp_path: Path, device: str = "NVIDIA H100 80GB HBM3") -> Path:
    """What a gpu_call.sh call brings back: the bundle (a trained full with RULER) and run.log."""
    results = tmp_path / f"bundle-{device[-4:]}" / "results"
    (results / "full" / "ruler").mkdir(parents=True)
    ruler = (ROOT / "docs" / "ruler" / "base-smollm2-h100-len-4096.json").read_text()
    (results / "full" / "ruler" / "ruler.json").write_text(ruler)
    cost = {"mode": "full", "steps": 100, "tokens": 13078698.0, "wall_seconds": 250.0}
    (results / "full" / "train.json").write_text(json.dumps(cost))
    (results / "environment.json").write_text(json.dumps({"device": device}))
    (results / "state.json").write_text("{}")
    files_at = tmp_path / f"call-{device[-4:]}"
    files_at.mkdir()
    with tarfile.open(files_at / "miniature-results.tar.gz", "w:gz") as tar:
        tar.add(results, arcname="results")
    (files_at / "run.log").write_text("[ 945s] all steps done\n")
    return files_at


def test_a_bundle_is_filed_for_the_report_and_not_filed_twice(tmp_path):
    dest = tmp_path / "docs"
    assert file_bundle.file_bundle(call_files(tmp_path), dest) == ["full"]
    raw = (ROOT / "docs" / "ruler" / "base-smollm2-h100-len-4096.json").read_bytes()
    assert lzma.decompress((dest / "full" / "ruler" / "ruler.json.xz").read_bytes()) == raw
    assert json.loads((dest / "full" / "environment.json").read_text()) == {"device": "NVIDIA H100 80GB HBM3"}
    assert (dest / "full" / "run.log").read_text().endswith("all steps done\n")
    found = ruler_report.gather([dest])
    assert "full" in found.ruler and found.train["full"]["steps"] == 100
    again = call_files(tmp_path, device="NVIDIA H200")
    with pytest.raises(UserError, match="full filed already"):
        file_bundle.file_bundle(again, dest)
    assert file_bundle.main([str(again), str(dest), "--replace"]) == 0
    assert json.loads((dest / "full" / "environment.json").read_text()) == {"device": "NVIDIA H200"}
    assert file_bundle.main([str(tmp_path / "nothing"), str(dest)]) == 2


def test_a_mode_trained_but_not_yet_evaluated_is_filed_with_what_it_has(tmp_path):
    """A session that ran out of device time after training: the mode's train.json, card and log are filed
    (the report tables them), with no ruler/ folder; nothing half-written is left beside it."""
    files_at = call_files(tmp_path)
    with tarfile.open(files_at / "miniature-results.tar.gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    import shutil

    shutil.rmtree(tmp_path / "x" / "results" / "full" / "ruler")
    with tarfile.open(files_at / "miniature-results.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "x" / "results", arcname="results")
    dest = tmp_path / "docs"
    assert file_bundle.file_bundle(files_at, dest) == ["full"]
    assert sorted(p.name for p in dest.iterdir()) == ["full"]
    assert sorted(p.name for p in (dest / "full").iterdir()) == ["environment.json", "run.log", "train.json"]
    text = ruler_report.main([str(dest)])
    assert "| full | 100 |" in text and "RULER average" not in text


def test_a_replacement_names_what_it_changes_in_the_filed_folder(tmp_path, capsys):
    """Filing again over a filed model says which of its files differ or go (a run restored from an
    older keep once brought back an older train.json and a log without its training lines, silently)."""
    dest = tmp_path / "docs"
    file_bundle.file_bundle(call_files(tmp_path), dest)
    (dest / "full" / "notes.txt").write_text("by hand\n")
    capsys.readouterr()
    again = call_files(tmp_path, device="NVIDIA H200")
    file_bundle.file_bundle(again, dest, replace=True)
    err = capsys.readouterr().err
    assert "full: replaced; environment.json differs, notes.txt dropped" in err, err
    assert "train.json" not in err and "run.log" not in err and "ruler" not in err
    file_bundle.file_bundle(again, dest, replace=True)
    assert "nothing filed changed" in capsys.readouterr().err
