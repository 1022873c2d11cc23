"""The multi-GPU benchmark's logic on CPU (gloo, 2 processes under torchrun): FSDP2 + Ulysses training
steps, the sequence-parallel-vs-one-process check, and its error handling."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from anchor_lightning.bench import distributed

pytestmark = pytest.mark.slow  # torchrun jobs

TINY = '{"hidden_size": 64, "intermediate_size": 128, "layers": 2, "heads": 4, "kv_heads": 2, "vocab_size": 512}'
COMMON = ["--gpus", "2", "--sp", "2", "--shape", TINY, "--rows", "512", "--documents", "exponential:100:16:512"]


def test_sequence_parallel_fsdp_steps_run_under_torchrun(tmp_path, capsys):
    out = tmp_path / "d.json"
    results = distributed.main(
        [*COMMON, "--modes", "anchor", "full", "--warmup", "1", "--steps", "1", "--out", str(out)]
    )
    assert json.loads(out.read_text()) == results
    assert [r["mode"] for r in results] == ["anchor", "full"]
    for r in results:
        assert "error" not in r, r.get("error")
        assert r["world"] == 2 and r["tokens_per_sec"] > 0 and np.isfinite(r["loss"])
        assert r["tokens_per_sec_per_gpu"] == pytest.approx(r["tokens_per_sec"] / 2)
        assert 5.0 < r["loss"] < 7.5  # ln(512) = 6.2 at random init
    assert "tok/s/GPU" in capsys.readouterr().out


def test_check_equals_one_process_in_fp32(tmp_path):
    (result,) = distributed.main([*COMMON, "--check", "--out", str(tmp_path / "c.json")])
    assert "error" not in result, result.get("error")
    assert result["loss_rel_diff"] < 1e-6
    assert result["grad_cosine"] > 1 - 1e-6 and result["grad_rel_norm_diff"] < 1e-5


def test_launch_names_out_of_memory_and_other_failures(monkeypatch):
    def fake(stderr):
        return lambda *a, **k: subprocess.CompletedProcess(a, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(subprocess, "run", fake("torch.OutOfMemoryError: CUDA out of memory."))
    assert distributed.launch({"seq_len": 8}, 2, 10)["error"] == "out of memory"
    monkeypatch.setattr(subprocess, "run", fake("Traceback\nValueError: bad shape\n"))
    assert distributed.launch({"seq_len": 8}, 2, 10)["error"] == "ValueError: bad shape"


def test_each_row_is_on_disk_before_the_next_launch(tmp_path, monkeypatch):
    out = tmp_path / "d.json"
    seen = []

    def fake(spec, gpus, timeout):
        seen.append(len(json.loads(out.read_text())) if out.exists() else 0)
        if len(seen) == 2:
            raise KeyboardInterrupt  # the machine taken back during the second row
        return {**spec, "tokens_per_sec": 1.0}

    monkeypatch.setattr(distributed, "launch", fake)
    with pytest.raises(KeyboardInterrupt):
        distributed.main([*COMMON[:-4], "--rows", "512", "1024", "--modes", "anchor", "--out", str(out)])
    assert seen == [0, 1] and [r["seq_len"] for r in json.loads(out.read_text())] == [512]


def test_groups_must_divide_the_gpus():
    with pytest.raises(SystemExit):
        distributed.main(["--gpus", "3", "--sp", "2"])


def test_a_hugging_face_config_directory_with_fewer_layers(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ).save_pretrained(tmp_path / "llama")
    (result,) = distributed.main(
        [
            "--gpus",
            "2",
            "--sp",
            "1",
            "--config",
            str(tmp_path / "llama"),
            "--layers",
            "1",
            "--rows",
            "256",
            "--documents",
            "exponential:100:16:256",
            "--warmup",
            "0",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "d.json"),
        ]
    )
    assert "error" not in result, result.get("error")
    assert result["layers"] == 1 and result["vocab_size"] == 300 and np.isfinite(result["loss"])


def test_anchor_over_full_step_ratio_is_printed_where_both_ran():
    results = [
        {"mode": "anchor", "seq_len": 8, "sp": 1, "step_seconds": 1.0},
        {"mode": "full", "seq_len": 8, "sp": 1, "step_seconds": 4.0},
        {"mode": "anchor", "seq_len": 16, "sp": 2, "step_seconds": 2.0},
        {"mode": "full", "seq_len": 16, "sp": 2, "error": "out of memory"},
    ]
    assert distributed.step_ratios(results) == "anchor/full step time at 8 (SP 1): 0.25"
