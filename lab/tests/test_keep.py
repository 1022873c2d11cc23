"""lab/miniature/keep.py: a trained mode's exported model and run state sent out in pieces, collected
and checked here, carried back in and restored, evaluated in bfloat16 bit for bit as the original; and
gpu_call.sh's stage restoring it so that `one MODE` continues the run without the GGUF or the data;
and the RULER evaluation's progress after the keep sent, carried and put back with it."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

from anchor_lightning.errors import UserError
from lab.miniature import keep

ROOT = Path(__file__).resolve().parents[2]


def trained_run(work: Path) -> Path:
    """A run folder as run.py leaves it after training and exporting `anchor` (float32 export)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    )
    LlamaForCausalLM(config).save_pretrained(work / "exported" / "anchor")
    (work / "state.json").write_text(json.dumps({"done": {"train-anchor": {}, "export-anchor": {}}}))
    (work / "run.args").write_text("--suites ruler\n")  # gpu_call.sh's record of what the run was started with
    (work / "run.log").write_text("[   260s] done train-anchor in 334 s\n")  # background.sh's log of the run
    (work / "logs").mkdir()
    (work / "logs" / "train-anchor.log").write_text("trained\n")
    (work / "results" / "anchor").mkdir(parents=True)
    (work / "results" / "anchor" / "train.json").write_text('{"steps": 100}')
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "last.ckpt").write_bytes(b"x" * 1000)  # not kept: the export is
    return work


def send_all(work: Path, tmp_path: Path, piece_bytes: int = 40_000) -> list[Path]:
    """Every part, each into the folder of its own call."""
    folders, part = [], 0
    while True:
        folder = tmp_path / f"call-{part}"
        said = keep.send(work, part, folder, per_call=2, piece_bytes=piece_bytes)
        folders.append(folder)
        if "that was the last" in said:
            return folders
        part += 1


def test_a_kept_mode_comes_back_and_is_evaluated_bit_for_bit_in_bfloat16(tmp_path):
    from transformers import AutoModelForCausalLM

    work = trained_run(tmp_path / "miniature-anchor")
    folders = send_all(work, tmp_path)
    assert len(folders) >= 2 and (folders[0] / "manifest.json").is_file()
    assert all(f.stat().st_size <= 40_000 for folder in folders for f in folder.glob("kept.tar.*"))
    with pytest.raises(UserError, match="parts 0 to"):
        keep.send(work, len(folders), tmp_path / "beyond")
    said = keep.collect("anchor", folders, tmp_path / "carry", per_call=3)
    carried = sorted((tmp_path / "carry" / "kept" / "anchor").iterdir())
    assert said.startswith(f"{len(list((tmp_path / 'carry').rglob('kept.tar.*')))} pieces checked")
    # carried back over several calls: the run is restored once the last piece is there
    there = tmp_path / "pieces"
    there.mkdir()
    restored = tmp_path / "fresh" / "miniature-anchor"
    for n, folder in enumerate(carried):
        for f in folder.iterdir():
            (there / f.name).write_bytes(f.read_bytes())
        said = keep.restore(there, restored)
        assert ("restored anchor" in said) == (n == len(carried) - 1), said
    assert keep.restore(there, restored).endswith("restored already")
    assert json.loads((restored / "state.json").read_text()) == {"done": {"train-anchor": {}, "export-anchor": {}}}
    assert (restored / "results" / "anchor" / "train.json").read_text() == '{"steps": 100}'
    assert (restored / "run.log").read_text() == "[   260s] done train-anchor in 334 s\n"  # logged on after
    assert not (restored / "checkpoints").exists() and (restored / "kept.json").is_file()
    original = AutoModelForCausalLM.from_pretrained(work / "exported" / "anchor", dtype=torch.bfloat16)
    kept = AutoModelForCausalLM.from_pretrained(restored / "exported" / "anchor", dtype=torch.bfloat16)
    a, b = original.state_dict(), kept.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    weights = restored / "exported" / "anchor" / "model.safetensors"
    assert weights.stat().st_size < 0.6 * (work / "exported" / "anchor" / "model.safetensors").stat().st_size
    # a RULER evaluation stopped before the keep goes on with the kept model: the same resume key
    from dataclasses import make_dataclass

    from anchor_lightning.commands.evaluate import ruler_key

    settings = make_dataclass("Settings", [("samples", int)])(100)
    assert ruler_key(original, "bfloat16", settings, {}) == ruler_key(kept, "bfloat16", settings, {})


def test_a_broken_or_missing_piece_is_refused_in_one_line(tmp_path):
    work = trained_run(tmp_path / "miniature-full")
    folders = send_all(work, tmp_path)
    (tmp_path / "only-manifest").mkdir()
    (tmp_path / "only-manifest" / "manifest.json").write_bytes((folders[0] / "manifest.json").read_bytes())
    with pytest.raises(UserError, match="pieces missing: kept.tar.000, kept.tar.001 "):
        keep.collect("full", folders[1:] + [tmp_path / "only-manifest"], tmp_path / "carry")
    piece = next(folders[0].glob("kept.tar.*"))
    piece.write_bytes(b"!" + piece.read_bytes()[1:])
    with pytest.raises(UserError, match="do not join to the manifest's sha256"):
        keep.collect("full", folders, tmp_path / "carry")
    assert not (tmp_path / "carry" / "kept" / "full").exists()
    earlier = tmp_path / "carry" / "kept" / "full" / "1"  # a carry collected before stays as it was
    earlier.mkdir(parents=True)
    (earlier / "kept.tar.000").write_bytes(b"kept")
    with pytest.raises(UserError, match="do not join to the manifest's sha256"):
        keep.collect("full", folders, tmp_path / "carry")
    assert (earlier / "kept.tar.000").read_bytes() == b"kept"
    assert not (tmp_path / "carry" / "kept" / "full.tmp").exists()
    assert keep.main(["collect", "full", str(tmp_path / "nothing")]) == 2
    with pytest.raises(UserError, match="no exported model yet"):
        keep.build(tmp_path / "empty")
    midway = trained_run(tmp_path / "midway")  # the export's files there, its step not recorded done yet
    (midway / "state.json").write_text(json.dumps({"done": {"train-anchor": {}}}))
    with pytest.raises(UserError, match="no exported model yet"):
        keep.build(midway)


def test_an_evaluations_progress_after_the_keep_comes_back_with_the_kept_run(tmp_path):
    work = trained_run(tmp_path / "miniature-anchor")
    partial = work / "results" / "anchor" / "ruler" / keep.PARTIAL
    partial.parent.mkdir(parents=True)
    head = '{"key": {"weights": "abc"}}\n{"task": "niah_single_1", "length": 4096, "records": []}\n'
    # one group finished when the mode is kept, and the next kept torn mid-write (the run drops and
    # writes it again)
    partial.write_text(head + '{"task": "niah_sin')
    folders = send_all(work, tmp_path)
    partial.write_text(head)
    with partial.open("a") as f:  # the evaluation goes on: two more groups, then the session ends
        f.write('{"task": "niah_single_1", "length": 8192, "records": []}\n')
        f.write('{"task": "niah_single_2", "length": 4096, "records": []}\n')
    said = keep.progress(work, tmp_path / "call-progress")
    assert said.endswith(": 3 finished (task, length) groups"), said
    assert [p.name for p in (tmp_path / "call-progress").iterdir()] == [keep.PROGRESS]
    said = keep.collect("anchor", [*folders, tmp_path / "call-progress"], tmp_path / "carry", per_call=3)
    assert "with the evaluation's progress" in said
    first = tmp_path / "carry" / "kept" / "anchor" / "1"
    assert (first / keep.PROGRESS).is_file() and (first / "manifest.json").is_file()
    there = tmp_path / "pieces"
    there.mkdir()
    for folder in sorted((tmp_path / "carry" / "kept" / "anchor").iterdir()):
        for f in folder.iterdir():
            (there / f.name).write_bytes(f.read_bytes())
    said = keep.restore(there, tmp_path / "fresh" / "miniature-anchor")
    assert said.endswith("; 2 more RULER groups from the progress sent after the keep"), said
    restored = tmp_path / "fresh" / "miniature-anchor" / "results" / "anchor" / "ruler" / keep.PARTIAL
    assert restored.read_bytes() == partial.read_bytes()
    # a later session's progress added to the carry already collected: its own folders are the sources
    with partial.open("a") as f:
        f.write('{"task": "niah_single_2", "length": 8192, "records": []}\n')
    keep.progress(work, tmp_path / "call-later")
    own = sorted((tmp_path / "carry" / "kept" / "anchor").iterdir())
    keep.collect("anchor", [*own, tmp_path / "call-later"], tmp_path / "carry", per_call=3)
    assert sorted((tmp_path / "carry" / "kept" / "anchor").iterdir()) == own
    later = tarfile.open(first / keep.PROGRESS).extractfile("results/anchor/ruler/" + keep.PARTIAL)
    assert later is not None and later.read() == partial.read_bytes()
    assert not (tmp_path / "carry" / "kept" / "anchor.tmp").exists()
    # a partial file that does not continue the kept one (another evaluation started over) is not taken
    partial.write_text('{"key": {"weights": "other"}}\n')
    keep.progress(work, tmp_path / "call-other")
    (there / keep.PROGRESS).write_bytes((tmp_path / "call-other" / keep.PROGRESS).read_bytes())
    said = keep.restore(there, tmp_path / "again" / "miniature-anchor")
    assert "; 0 more RULER groups" in said and "not taken: results/anchor/ruler/ruler.partial.jsonl (does not" in said
    again = tmp_path / "again" / "miniature-anchor" / "results" / "anchor" / "ruler" / keep.PARTIAL
    assert again.read_text() == head + '{"task": "niah_sin'  # the kept file as it was
    with pytest.raises(UserError, match="no RULER evaluation under way"):
        keep.progress(trained_run(tmp_path / "no-evaluation"), tmp_path / "call-none")


@pytest.mark.slow  # gpu_call.sh's background run, with its waits
def test_gpu_call_stage_restores_a_kept_mode_and_one_continues_it_without_the_gguf(tmp_path):
    from lab.tests.test_miniature_pipeline import STAND_IN, gpu_call

    work = trained_run(tmp_path / "elsewhere" / "work-anchor")
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    keep.collect("anchor", send_all(work, tmp_path), tmp_path / "carry", per_call=100)
    (tmp_path / "pieces").mkdir()
    staged = gpu_call(tmp_path, "stage", watch=1)
    assert staged.returncode == 0 and "restored anchor into" in staged.stdout, staged.stdout + staged.stderr
    assert (tmp_path / "work-anchor" / "kept.json").is_file()
    other = gpu_call(tmp_path, "one", "anchor", watch=1)  # not as it was started: said, nothing runs
    assert other.returncode == 2 and "other arguments (--suites ruler): pass those" in other.stdout, other.stdout
    run = gpu_call(tmp_path, "one", "anchor", "--suites", "ruler", watch=1)  # no GGUF, no data here
    assert run.returncode == 10 and "started in the background" in run.stdout, run.stdout + run.stderr
    assert gpu_call(tmp_path, "keep", "anchor", watch=1).returncode == 2
    sent = gpu_call(tmp_path, "keep", "anchor", "0", watch=1)
    assert sent.returncode == 0 and "sent part 0" in sent.stdout and (sent.out / "manifest.json").is_file()
    nothing = gpu_call(tmp_path, "keep", "anchor", "progress", watch=1)  # the stand-in evaluates nothing
    assert nothing.returncode == 2 and "no RULER evaluation under way" in nothing.stderr, nothing.stdout
    assert not (run.out / keep.PROGRESS).exists()  # nothing under way: no progress with the call's files
    # the restored run's evaluation under way: each call watching it brings its finished groups back
    partial = tmp_path / "work-anchor" / "results" / "anchor" / "ruler" / keep.PARTIAL
    partial.parent.mkdir(parents=True)
    partial.write_text('{"key": {}}\n{"task": "niah_single_1", "length": 4096, "records": []}\n')
    watched = gpu_call(tmp_path, "watch", "anchor", watch=1)
    assert watched.returncode in (3, 10) and "1 finished (task, length) groups" in watched.stdout, watched.stdout
    with tarfile.open(watched.out / keep.PROGRESS) as tar:
        assert tar.getnames() == ["results/anchor/ruler/" + keep.PARTIAL]
    tests = gpu_call(tmp_path, "watch", "tests", watch=1)  # not a kept run: nothing more
    assert tests.returncode == 4 and not (tests.out / keep.PROGRESS).exists()
    subprocess.run(["pkill", "-f", str(tmp_path / "work-anchor")], check=False)
