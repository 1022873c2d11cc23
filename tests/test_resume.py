"""Interrupted and resumed runs (FP8 ones too) reach step 2k with the same rows and losses as an
uninterrupted run; SIGTERM saves and stops; kill -9 during a save leaves the previous checkpoint
loadable; a non-finite gradient stops the run naming the step and rows, or is skipped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from anchor_lightning.commands import main

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "configs" / "micro.yaml"
STEPS = 12  # 2k, with k = 6 in the middle of the second epoch


@pytest.fixture
def corpus(tmp_path):
    """A small data set: 3 optimizer steps per epoch, so 12 steps cross 3 epoch boundaries."""
    import random

    rng = random.Random(1)
    words = "river stone lamp bridge north quiet seven garden".split()
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "".join(json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(5, 40)))}) + "\n" for _ in range(70))
    )
    return path


def config(tmp_path: Path, name: str, corpus: Path, *callbacks: dict) -> list[str]:
    """The micro recipe plus checkpoints every 2 steps, a step trace, and ``callbacks``."""
    run_dir = tmp_path / name
    fragment = {
        "trainer": {
            "enable_checkpointing": True,
            "accumulate_grad_batches": 2,
            "val_check_interval": None,
            "limit_val_batches": 0,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(run_dir / "ckpt"),
                        "every_n_train_steps": 2,
                        "save_last": True,
                        "save_top_k": -1,
                    },
                },
                {"class_path": "anchor_lightning.callbacks.trace.StepTrace", "init_args": {"directory": str(run_dir)}},
                *callbacks,
            ],
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(run_dir / "tb")},
            },
        },
        "data": {
            "train": str(corpus),
            "val_fraction": 0.0,
            "micro_batch_size": 2,
            "cache_dir": str(tmp_path / "cache"),
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fragment))
    return ["fit", "--config", str(MICRO), "--config", str(path)]


def trace(tmp_path: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / name / "trace-rank0.jsonl").read_text().splitlines()]


def assert_same_run(reference: list[dict], resumed: list[dict]) -> None:
    assert [t["step"] for t in resumed] == list(range(STEPS))
    for a, b in zip(reference, resumed):
        assert a["rows"] == b["rows"] and a["hash"] == b["hash"], (a, b)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7), (a, b)
    print("\n".join(f"step {t['step']:2d} rows {t['hash']} loss {t['loss']:.6f}" for t in resumed))


@pytest.fixture
def uninterrupted(tmp_path, corpus):
    main(config(tmp_path, "full", corpus) + [f"--trainer.max_steps={STEPS}"])
    steps = trace(tmp_path, "full")
    assert len({t["hash"] for t in steps}) == STEPS, "every step reads other rows"
    return steps


def test_stop_at_k_then_resume_to_2k(tmp_path, corpus, uninterrupted):
    """The same run (same max_steps, so the same LR schedule), stopped after step k and resumed."""
    stop = {"class_path": "tests.helpers.StopAtStep", "init_args": {"step": STEPS // 2}}
    main(config(tmp_path, "split", corpus, stop) + [f"--trainer.max_steps={STEPS}"])
    assert len(trace(tmp_path, "split")) == STEPS // 2
    main(config(tmp_path, "split", corpus) + [f"--trainer.max_steps={STEPS}", "--ckpt_path=last"])
    assert_same_run(uninterrupted, trace(tmp_path, "split"))
    # train/tokens_seen (and the MFU's FLOPs) count on from the checkpoint, not from zero
    counters = [
        torch.load(tmp_path / run / "ckpt" / "last.ckpt", weights_only=False)["anchor_lightning_counters"]
        for run in ("full", "split")
    ]
    assert counters[0] == counters[1] and counters[0]["tokens_seen"] > 0


def test_sigterm_in_the_middle_of_a_step_saves_and_resumes(tmp_path, corpus, uninterrupted):
    args = config(tmp_path, "term", corpus)
    signal_at = {"class_path": "tests.helpers.SignalAtStep", "init_args": {"step": STEPS // 2 - 1}}
    main(config(tmp_path, "term", corpus, signal_at) + [f"--trainer.max_steps={STEPS}"])
    saved = torch.load(tmp_path / "term" / "ckpt" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == STEPS // 2  # the interrupted step finished, then the run saved and stopped
    # the signal's step is also a checkpoint step: one last.ckpt, never a second last-v1.ckpt beside it
    assert not list((tmp_path / "term" / "ckpt").glob("last-v*.ckpt"))
    assert len(trace(tmp_path, "term")) == STEPS // 2
    main(args + [f"--trainer.max_steps={STEPS}", "--ckpt_path=last"])
    assert_same_run(uninterrupted, trace(tmp_path, "term"))


@pytest.mark.slow
def test_an_fp8_run_stopped_and_resumed_is_the_uninterrupted_fp8_run(
    tmp_path, corpus, uninterrupted, monkeypatch, capsys
):
    """FP8 linear layers keep the plain weights and no state of their own, so an FP8 run resumes to the
    same rows and losses as one never stopped. fit refuses FP8 off a GPU with FP8 matmuls; torch's CPU
    build runs them too, so here the device check is let through (eager layers: no compile on CPU)."""
    from anchor_lightning.model import float8, speed

    monkeypatch.setattr(speed, "check_float8", lambda recipe, layers, *device: float8.check_float8(recipe, layers))
    fp8 = [f"--trainer.max_steps={STEPS}", "--model.float8=tensorwise", "--model.float8_layers=all"]
    fp8.append("--model.float8_compile=false")
    main(config(tmp_path, "fp8", corpus) + fp8)
    assert "linear layers FP8 tensorwise" in capsys.readouterr().out
    stop = {"class_path": "tests.helpers.StopAtStep", "init_args": {"step": STEPS // 2}}
    main(config(tmp_path, "fp8-split", corpus, stop) + fp8)
    main(config(tmp_path, "fp8-split", corpus) + [*fp8, "--ckpt_path=last"])
    whole = trace(tmp_path, "fp8")
    assert_same_run(whole, trace(tmp_path, "fp8-split"))
    assert [t["hash"] for t in whole] == [t["hash"] for t in uninterrupted]  # the same rows as without FP8
    assert all(a["loss"] != b["loss"] for a, b in zip(whole[1:], uninterrupted[1:]))  # the matmuls ran in FP8


@pytest.mark.slow
def test_sigterm_as_a_process_sees_it(tmp_path, corpus):
    signal_at = {"class_path": "tests.helpers.SignalAtStep", "init_args": {"step": 2}}
    args = config(tmp_path, "proc", corpus, signal_at) + [f"--trainer.max_steps={STEPS}"]
    result = subprocess.run(
        [sys.executable, "-m", "anchor_lightning", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "signal received" in result.stdout + result.stderr
    assert torch.load(tmp_path / "proc" / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 3


@pytest.mark.slow
def test_kill_9_during_a_save_keeps_the_previous_checkpoint(tmp_path, corpus, uninterrupted):
    killer = {"class_path": "tests.helpers.KillDuringSave", "init_args": {"step": 4}}
    args = config(tmp_path, "kill", corpus, killer) + [f"--trainer.max_steps={STEPS}"]
    result = subprocess.run(
        [sys.executable, "-m", "anchor_lightning", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == -signal.SIGKILL
    ckpt = tmp_path / "kill" / "ckpt"
    last = torch.load(ckpt / "last.ckpt", weights_only=False)
    assert last["global_step"] == 2 and "state_dict" in last
    assert list(ckpt.glob(".*.tmp")), "the killed save left its temporary file, not a broken checkpoint"
    # and the run resumes from it
    main(config(tmp_path, "kill", corpus) + [f"--trainer.max_steps={STEPS}", "--ckpt_path=last"])
    steps = trace(tmp_path, "kill")
    assert [t["step"] for t in steps] == [0, 1, 2, 3] + list(range(2, STEPS)), "steps 2-3 are redone from step 2"
    # the same run as one never killed: the same rows and losses, and the same final weights, bit for bit
    assert_same_run(uninterrupted, steps[:2] + steps[4:])
    finals = [torch.load(tmp_path / run / "ckpt" / "last.ckpt", weights_only=False) for run in ("full", "kill")]
    assert finals[0]["global_step"] == finals[1]["global_step"] == STEPS
    assert all(torch.equal(finals[0]["state_dict"][k], v) for k, v in finals[1]["state_dict"].items())


def test_non_finite_gradient_stops_naming_step_and_rows(tmp_path, corpus, capsys):
    poison = {"class_path": "tests.helpers.NanGradientAtStep", "init_args": {"step": 3}}
    with pytest.raises(SystemExit) as stopped:
        main(
            config(tmp_path, "nan", corpus, poison) + [f"--trainer.max_steps={STEPS}", "--trainer.log_every_n_steps=1"]
        )
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    rows = trace(tmp_path, "nan")[3]["rows"]
    assert rows, "the trace recorded the poisoned step's rows"
    assert f"non-finite loss or gradient at optimizer step 3 (packed rows {rows} on rank 0" in err, err
    assert "model.on_nonfinite" in err and "Traceback" not in err
    saved = torch.load(tmp_path / "nan" / "ckpt" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2, "no checkpoint after the poisoned step"


def test_non_finite_gradient_can_be_skipped(tmp_path, corpus):
    poison = {"class_path": "tests.helpers.NanGradientAtStep", "init_args": {"step": 3}}
    cli = main(config(tmp_path, "skip", corpus, poison) + ["--trainer.max_steps=6", "--model.on_nonfinite=skip"])
    assert cli.model.stats.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


def test_sigterm_at_the_first_checkpoint_step_leaves_one_last_checkpoint(tmp_path, corpus):
    """The signal's save and ModelCheckpoint's first save fall on one step: ModelCheckpoint, which had
    not saved last.ckpt itself, used to write a second last-v1.ckpt beside it."""
    signal_at = {"class_path": "tests.helpers.SignalAtStep", "init_args": {"step": 1}}
    main(config(tmp_path, "first", corpus, signal_at) + [f"--trainer.max_steps={STEPS}"])
    saved = sorted(p.name for p in (tmp_path / "first" / "ckpt").glob("last*.ckpt"))
    assert saved == ["last.ckpt"], saved
    assert torch.load(tmp_path / "first" / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == 2
