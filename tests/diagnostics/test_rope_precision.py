"""The RoPE precision diagnostic on tiny random models: the paper's metric, computed layer by layer,
equals a brute-force computation from full attention matrices, and shows the BF16 effect."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AttentionInterface, AutoModelForCausalLM

from anchor_lightning.diagnostics.rope_precision import measure
from tests.conftest import VOCAB, tiny_config

FULL = "test_full_matrices"
captured: list[torch.Tensor] = []


def full_matrices(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """Reference attention that keeps every layer's full probability matrix (small cases only)."""
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    length = query.shape[2]
    scores = (query @ key.transpose(-1, -2)) * scaling
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    probs = scores.softmax(-1)
    captured.append(probs.double())
    return (probs @ value).transpose(1, 2).contiguous(), None


AttentionInterface.register(FULL, full_matrices)


def model(init: float = 0.02, layers: int = 2, dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    config = tiny_config("llama", num_hidden_layers=layers, initializer_range=init, max_position_embeddings=8192)
    return AutoModelForCausalLM.from_config(config).eval().to(dtype)


def window(length: int, seed: int) -> torch.Tensor:
    ids = torch.randint(3, VOCAB, (length,), generator=torch.Generator().manual_seed(seed))
    ids[0] = 1
    return ids


def brute_force(m, ids: torch.Tensor, a: int, b: int) -> float:
    """D from the full attention matrices of every layer, straight from the definition."""
    length = len(ids)
    maps = []
    m.set_attn_implementation(FULL)
    for offset in (a, b):
        captured.clear()
        with torch.no_grad():
            m(input_ids=ids[None], position_ids=(torch.arange(length) + offset)[None], use_cache=False)
        maps.append(torch.stack([p[0] for p in captured]))  # [layers, heads, L, L]
    m.set_attn_implementation("sdpa")
    weights = 1.0 / (length - torch.arange(length, dtype=torch.float64))
    return float(((maps[0] - maps[1]).abs().tril() * weights).sum())


def test_layer_by_layer_d_equals_the_brute_force_definition():
    # float64 weights, a large shift: RoPE's fp32 angles make D well above float64 rounding
    m = model(init=0.1, dtype=torch.float64)
    ids = window(48, 0)
    record, _ = measure(m, ids, 0, 3000)
    reference = brute_force(m, ids, 0, 3000)
    assert reference > 1e-7
    assert record.d == pytest.approx(reference, rel=1e-9)
    assert float(record.per_token.sum()) == pytest.approx(record.d, rel=1e-12)
    assert sum(record.layers) == pytest.approx(record.d, rel=1e-12) and len(record.layers) == 2


def test_bf16_deviates_at_least_100_times_more_than_fp32():
    ids = window(256, 1)
    bf16, _ = measure(model(dtype=torch.bfloat16), ids, 0, 16)
    fp32, _ = measure(model(dtype=torch.float32), ids, 0, 16)
    print(f"L=256: D bf16 {bf16.d:.3g}, fp32 {fp32.d:.3g}, ratio {bf16.d / fp32.d:.0f}")
    assert bf16.d / fp32.d >= 100


def test_bf16_deviation_grows_with_length():
    """A random model with sharp attention (larger init, as trained models have): D grows with L."""
    m = model(init=0.3, dtype=torch.bfloat16)
    means = []
    for length in (64, 128, 256, 512, 1024):
        means.append(np.mean([measure(m, window(length, s), 0, 16)[0].d for s in range(3)]))
    print("D bf16 by length:", [f"{d:.3g}" for d in means])
    assert all(x < y for x, y in zip(means, means[1:]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_anchor_at_position_0_is_identical_across_offsets(dtype):
    m = model(dtype=dtype)
    ids = window(128, 2)
    anchored, hidden = measure(m, ids, 0, 500, anchor=True)
    assert anchored.first_kv_diff == 0.0 and hidden == 0.0
    shifted, hidden_shifted = measure(m, ids, 0, 500, anchor=False)
    assert shifted.first_kv_diff > 0.0  # the check has power: a moved first token's keys rotate
    # (its hidden states never depend on positions: causally it attends to itself alone)
    assert hidden_shifted == 0.0


def test_d_logit_and_content_split():
    m = model(init=0.3, dtype=torch.bfloat16)
    record, _ = measure(m, window(64, 3), 0, 16)
    assert record.d_logit > 0
    # D = the first key column's share + the content-to-content rest
    assert record.d == pytest.approx(float(record.per_token[0]) + record.d_content, rel=1e-9)


def test_diagnose_command_writes_json_and_plots(tmp_path, capsys, monkeypatch):
    from anchor_lightning.commands import diagnose, main
    from anchor_lightning.diagnostics import plots
    from tests.helpers import record_whole_writes

    whole = record_whole_writes(monkeypatch, diagnose, plots)

    main(
        [
            "diagnose",
            "--model",
            "tests/configs/micro.yaml",
            "--lengths",
            "64",
            "128",
            "--offsets",
            "0",
            "16",
            "100",
            "--offset-length",
            "128",
            "--sequences",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    results = json.loads((tmp_path / "rope_deviation.json").read_text())
    assert results["length_sweep"]["lengths"] == [64, 128]
    assert len(results["offset_sweep"]["bfloat16"]["D"]) == 3
    assert results["offset_sweep"]["bfloat16"]["D"][1] < 1e-12, "a = b: no deviation at all"
    for name in ("offset_sweep.png", "length_sweep.png", "per_token.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert sorted(whole) == sorted(p.name for p in tmp_path.iterdir())  # each whole or not at all
    out = capsys.readouterr().out
    assert "D bf16 / fp32" in out and "anchor rule: first token's K/V differ by at most 0" in out
