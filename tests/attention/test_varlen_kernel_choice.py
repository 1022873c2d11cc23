"""Which FlashAttention varlen kernel the varlen backend calls: FA3 on Hopper when importable, then
flash-attn 2, then PyTorch's ``varlen_attn`` (stand-in modules; the kernels themselves run on GPUs)."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from anchor_lightning.attention import backends


@pytest.fixture
def fresh_choice():
    backends._varlen_kernel.cache_clear()
    yield
    backends._varlen_kernel.cache_clear()


def _fake(monkeypatch, name: str, module_name: str, result):
    calls = []

    def varlen(*args, **kwargs):
        calls.append((args, kwargs))
        return result

    module = types.ModuleType(module_name)
    module.flash_attn_varlen_func = varlen
    monkeypatch.setitem(sys.modules, module_name, module)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == name else real(n, *a))
    return calls


@pytest.mark.parametrize("returns_lse", [False, True])
def test_flash_attention_3_is_chosen_on_hopper(monkeypatch, fresh_choice, returns_lse):
    out = torch.zeros(4, 2, 8)
    calls = _fake(monkeypatch, "flash_attn_interface", "flash_attn_interface", (out, torch.zeros(2, 4)) if returns_lse else out)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    cu = torch.tensor([0, 4], dtype=torch.int32)
    assert backends._varlen_kernel()(out, out, out, cu, 4, 0.5) is out
    (args, kwargs), = calls
    assert args[3] is cu and args[4] is cu and args[5:7] == (4, 4)
    assert kwargs == {"softmax_scale": 0.5, "causal": True}


def test_flash_attention_3_is_skipped_off_hopper(monkeypatch, fresh_choice):
    calls = _fake(monkeypatch, "flash_attn_interface", "flash_attn_interface", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    kernel = backends._varlen_kernel()
    assert kernel.__name__ != "fa3" and not calls
