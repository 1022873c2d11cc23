"""The benchmark harness (its numbers are measured on the GPU machine; here: its logic and a CPU smoke)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from anchor_lightning.bench import __main__ as bench
from anchor_lightning.bench.documents import document_lengths
from anchor_lightning.bench.flops import attention_pairs_of
from tests.conftest import SHARED_DATA, needs_shared

TINY = '{"hidden_size": 64, "intermediate_size": 128, "layers": 2, "heads": 4, "kv_heads": 2, "vocab_size": 512}'


def test_exponential_lengths_are_reproducible_and_bounded():
    a = document_lengths("exponential:1500:64:16384", 65536, seed=1)
    assert a == document_lengths("exponential:1500:64:16384", 65536, seed=1)
    assert a != document_lengths("exponential:1500:64:16384", 65536, seed=2)
    assert sum(a) >= 65536 and sum(a[:-1]) < 65536
    assert min(a) >= 64 and max(a) <= 16384 and 1000 < np.mean(a) < 2000


@needs_shared
def test_corpus_lengths_repeat_the_real_documents():
    lengths = document_lengths(str(SHARED_DATA / "wikitext2-valid.tokenized.jsonl"), 400_000)
    assert lengths[:3] == lengths[60:63] and max(lengths) == 26_356


def test_attention_pairs_follow_the_flops_rule():
    docs = np.array([0, 0, 0, 1, 1, -2])
    assert attention_pairs_of(docs, None) == 9 + 4
    assert attention_pairs_of(docs, "full") == 25
    shared = np.array([-1, 0, 0, 1, -2])
    assert attention_pairs_of(shared, "anchor") == 9 + 4 + 1  # each document plus the anchor column


def test_max_context_stops_at_the_first_failure(monkeypatch):
    fits = {4096, 6144, 8192, 12288, 16384}
    monkeypatch.setattr(
        bench, "run_one", lambda spec, timeout: spec if spec["seq_len"] in fits else {**spec, "error": "out of memory"}
    )
    best, tried = bench.max_context({"name": "x"}, timeout=1, start=4096, limit=1 << 20)
    assert best == 16384 and [t["seq_len"] for t in tried] == [4096, 6144, 8192, 12288, 16384, 24576]


def test_probe_grid_holds_powers_of_two_and_midpoints():
    assert bench.grid(4096, 16384) == [4096, 6144, 8192, 12288, 16384]
    assert bench.grid(393216, 1 << 20) == [393216, 524288, 786432, 1048576]


def test_best_checkpointing_is_the_first_setting_that_fits(monkeypatch):
    calls = []

    def fake(spec, timeout):
        calls.append(spec["checkpointing"])
        return {**spec, "error": "out of memory"} if spec["checkpointing"] is False else {**spec, "tokens_per_sec": 1.0}

    monkeypatch.setattr(bench, "run_one", fake)
    settings = bench.checkpoint_settings("auto", layers=None)
    assert settings == [False, True]
    result = bench.run_best({"name": "x"}, settings, timeout=1)
    assert calls == [False, True] and result["checkpointing"] is True and result["tried"][0]["checkpointing"] is False
    # every contender, every row length: none first, then the selective setting, then all layers
    assert bench.checkpoint_settings("auto", layers=6) == [False, 6, True]
    assert bench.checkpoint_settings("on", layers=6) == [6, True]
    assert bench.checkpoint_settings("off", layers=6) == [False]
    calls.clear()
    monkeypatch.setattr(bench, "run_one", lambda spec, timeout: calls.append(1) or {**spec, "error": "boom"})
    assert bench.run_best({}, [False, True], timeout=1)["error"] == "boom" and calls == [1]  # only OOM moves on


def test_table_ratios_are_against_the_fastest_peer():
    rows = [
        {
            "name": "hf-flex-liger",
            "seq_len": 8,
            "precision": "bf16",
            "checkpointing": False,
            "tokens_per_sec": 100.0,
            "flops_per_token": 1e9,
            "mfu": 0.4,
            "peak_gib": 10.0,
        },
        {
            "name": "ours-anchor-varlen",
            "seq_len": 8,
            "precision": "bf16",
            "checkpointing": False,
            "tokens_per_sec": 130.0,
            "flops_per_token": 1e9,
            "mfu": 0.52,
            "peak_gib": 9.0,
        },
        {
            "name": "hf-sdpa-full-liger",
            "seq_len": 8,
            "precision": "bf16",
            "checkpointing": True,
            "error": "out of memory",
        },
    ]
    text = bench.table(rows)
    assert "1.30x" in text and "1.00x" in text and "out of memory" in text


@pytest.mark.slow
def test_harness_runs_contenders_in_subprocesses_on_cpu(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(
        [
            "--rows",
            "512",
            "--contenders",
            "ours-anchor-sdpa",
            "hf-sdpa-full",
            "--shape",
            TINY,
            "--documents",
            "exponential:100:16:512",
            "--warmup",
            "1",
            "--steps",
            "1",
            "--out",
            str(out),
        ]
    )
    results = json.loads(out.read_text())
    assert {r["name"] for r in results} == {"ours-anchor-sdpa", "hf-sdpa-full"}
    assert all("error" not in r and r["tokens_per_sec"] > 0 and np.isfinite(r["loss"]) for r in results)
    assert "vs best peer" in capsys.readouterr().out
    assert all(r["checkpointing"] is False for r in results)  # 512-slot rows fit without recomputation
    ours = next(r for r in results if r["name"] == "ours-anchor-sdpa")
    assert ours["pack_ms"] > 0 and ours["collate_ms"] > 0
    assert "host work per row" in bench.host_work(results) and "of the step" in bench.host_work(results)


def test_each_measured_row_is_on_disk_before_the_next_contender_runs(tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    seen = []

    def fake(spec, settings, timeout):
        seen.append(json.loads(out.read_text()) if out.exists() else [])  # what a stopped run would have left
        if len(seen) == 3:
            raise KeyboardInterrupt  # the machine taken back during the third contender
        return {**spec, "tokens_per_sec": float(len(seen))}

    monkeypatch.setattr(bench, "run_best", fake)
    argv = ["--rows", "512", "1024", "--contenders", "ours-anchor-sdpa", "hf-sdpa-full", "--shape", TINY]
    with pytest.raises(KeyboardInterrupt):
        bench.main([*argv, "--documents", "exponential:100:16:512", "--out", str(out)])
    assert [len(rows) for rows in seen] == [0, 1, 2]
    kept = json.loads(out.read_text())
    assert [r["tokens_per_sec"] for r in kept] == [1.0, 2.0] and {r["seq_len"] for r in kept} == {512}
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left beside it


@pytest.mark.slow
def test_profile_classifies_kernels_and_writes_a_file(tmp_path):
    from anchor_lightning.bench.worker import kernel_class

    assert kernel_class("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>") == "attention"
    assert kernel_class("triton_tem_fused_flex_attention_backward_mul_1") == "attention"
    assert kernel_class("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NTT") == "matmul"
    assert kernel_class("_swiglu_backward_kernel") == "fused norm/rope/swiglu/loss"
    assert kernel_class("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdam>") == "optimizer"
    assert kernel_class("vectorized_elementwise_kernel<CUDAFunctor_add>") == "other"
    bench.main(
        [
            "--rows",
            "256",
            "--contenders",
            "ours-anchor-sdpa",
            "--shape",
            TINY,
            "--documents",
            "exponential:100:16:256",
            "--warmup",
            "0",
            "--steps",
            "1",
            "--profile",
            str(tmp_path / "prof"),
            "--out",
            str(tmp_path / "b.json"),
        ]
    )
    assert (tmp_path / "prof" / "ours-anchor-sdpa-256.txt").read_text().startswith("ours-anchor-sdpa row 256")


@pytest.mark.slow
def test_a_hugging_face_config_directory_sets_the_model(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ).save_pretrained(tmp_path / "qwen2")
    results = bench.main(
        [
            "--config",
            str(tmp_path / "qwen2"),
            "--rows",
            "256",
            "--contenders",
            "ours-anchor-sdpa",
            "hf-sdpa-full",
            "--documents",
            "exponential:100:16:256",
            "--warmup",
            "0",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "b.json"),
        ]
    )
    assert all("error" not in r and r["vocab_size"] == 300 for r in results)
    # 2 layers of 32 wide: the FLOPs follow the config, not the default 1B shape
    assert all(r["flops_per_token"] < 1e7 for r in results)


def test_each_varlen_kernel_asked_for_is_its_own_run():
    args = argparse.Namespace(
        documents="exponential:100:16:256",
        seed=1,
        warmup=0,
        steps=1,
        profile=None,
        kernels="auto",
        offload=False,
        mlp_tile=None,
        precision=["bf16", "fp32-master"],
        varlen_kernel=["fa2", "fa4"],
        float8=["none"],
        float8_layers="auto",
        float8_eager=False,
        compile_layers=False,
    )
    anchor = bench.contender_specs("ours-anchor-varlen", 256, {}, args)
    assert [(s["precision"], s["varlen_kernel"]) for s in anchor] == [
        ("bf16", "fa2"),
        ("bf16", "fa4"),
        ("fp32-master", "fa2"),
        ("fp32-master", "fa4"),
    ]
    assert [bench.label(s) for s in anchor[:2]] == ["ours-anchor-varlen:fa2", "ours-anchor-varlen:fa4"]
    # full mode runs SDPA's causal kernel on CUDA, the other backends and the peers run no varlen kernel
    for name in ("ours-full-varlen", "ours-anchor-flex", "hf-flex-liger"):
        specs = bench.contender_specs(name, 256, {}, args)
        assert len(specs) == 2 and all("varlen_kernel" not in s for s in specs) and bench.label(specs[0]) == name


def test_fp8_contenders_are_compared_with_the_fp8_peer():
    """``--float8 none tensorwise`` makes each contender two runs; an FP8 run's ratio is to the best FP8
    peer, a bf16 run's to the best bf16 peer (an FP8 peer must not lower ours in bf16)."""
    args = argparse.Namespace(
        documents="exponential:100:16:512", seed=1, warmup=1, steps=1, profile=None, kernels="auto", offload=False,
        mlp_tile=None, varlen_kernel=["auto"], precision=["bf16"], float8=["none", "tensorwise"], float8_layers="all",
        float8_eager=False, compile_layers=False,
    )  # fmt: skip
    specs = bench.contender_specs("hf-flex-liger", 8, {}, args)
    assert [(s["float8"], s["float8_layers"]) for s in specs] == [(None, "all"), ("tensorwise", "all")]
    assert all(s["float8_compile"] for s in specs)
    common = {"seq_len": 8, "precision": "bf16", "checkpointing": False, "flops_per_token": 1e9, "mfu": 0.4}
    rows = [
        {**common, "name": "hf-flex-liger", "float8": None, "tokens_per_sec": 100.0, "peak_gib": 10.0},
        {**common, "name": "hf-flex-liger", "float8": "tensorwise", "tokens_per_sec": 200.0, "peak_gib": 10.0},
        {**common, "name": "ours-anchor-varlen", "float8": None, "tokens_per_sec": 120.0, "peak_gib": 9.0},
        {**common, "name": "ours-anchor-varlen", "float8": "tensorwise", "tokens_per_sec": 250.0, "peak_gib": 9.0},
    ]
    lines = bench.table(rows).splitlines()[1:]
    ratios = {line.split()[0]: line.split()[-1] for line in lines}
    assert ratios == {
        "hf-flex-liger": "1.00x",
        "hf-flex-liger+fp8:tensorwise": "1.00x",
        "ours-anchor-varlen": "1.20x",
        "ours-anchor-varlen+fp8:tensorwise": "1.25x",
    }


def test_a_compiled_run_is_named_so():
    assert bench.label({"name": "ours-anchor-varlen", "varlen_kernel": "fa4", "compile_layers": True}) == (
        "ours-anchor-varlen:fa4+compiled"
    )
    assert bench.label({"name": "hf-flex-liger", "float8": "rowwise"}) == "hf-flex-liger+fp8:rowwise"
    # compiled without Liger's kernels inside the layers (they break the compiled graph): named apart
    inductor = {"name": "ours-anchor-varlen", "kernels": "none", "compile_layers": True}
    assert bench.label(inductor) == "ours-anchor-varlen+kernels:none+compiled"
    assert bench.label({"name": "ours-anchor-varlen", "kernels": "auto"}) == "ours-anchor-varlen"
