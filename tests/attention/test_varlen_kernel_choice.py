"""Which FlashAttention varlen kernel the varlen backend calls: FA3 on Hopper, then FA4 on Hopper and
newer, then flash-attn 2, then PyTorch's ``varlen_attn``, or the one ``ANCHOR_VARLEN_KERNEL`` names
(stand-in modules; the kernels themselves run on GPUs: tests/gpu/test_varlen_kernels_gpu.py)."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from anchor_lightning.attention import varlen_kernels as backends
from anchor_lightning.errors import RunWarning


@pytest.fixture
def installed(monkeypatch):
    """Install stand-in modules: installed(name, result) -> the list of calls its varlen function gets."""
    backends._varlen_kernel.cache_clear()
    monkeypatch.delenv(backends.VARLEN_KERNEL_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    fakes: set[str] = set()
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name in fakes:
            return object()
        if name.split(".")[0] in {"flash_attn", "flash_attn_interface"}:  # the real ones stay hidden
            if "." in name:
                raise ModuleNotFoundError(name)
            return None
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    def install(module_name: str, result=None, function: bool = True, imports: bool = True):
        calls = []
        fakes.add(module_name)
        if not imports:  # found on the path, but importing it fails
            monkeypatch.delitem(sys.modules, module_name, raising=False)
            return calls
        module = types.ModuleType(module_name)
        if function:
            module.flash_attn_varlen_func = lambda *args, **kwargs: calls.append((args, kwargs)) or result
        monkeypatch.setitem(sys.modules, module_name, module)
        return calls

    yield install
    backends._varlen_kernel.cache_clear()


def _capability(monkeypatch, major: int):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (major, 0))


CU = torch.tensor([0, 4], dtype=torch.int32)
OUT = torch.zeros(4, 2, 8)


@pytest.mark.parametrize("returns_lse", [False, True])
def test_flash_attention_3_is_chosen_on_hopper(monkeypatch, installed, returns_lse):
    calls = installed("flash_attn_interface", (OUT, torch.zeros(2, 4)) if returns_lse else OUT)
    installed("flash_attn.cute", OUT)
    _capability(monkeypatch, 9)
    assert backends.choose_varlen_kernel() == "fa3"
    assert backends._varlen_kernel()(OUT, OUT, OUT, CU, 4, 0.5) is OUT
    ((args, kwargs),) = calls
    assert args[3] is CU and args[4] is CU and args[5:7] == (4, 4)
    assert kwargs == {"softmax_scale": 0.5, "causal": True}


def test_flash_attention_4_comes_next_on_hopper_and_newer(monkeypatch, installed):
    calls = installed("flash_attn.cute", (OUT, torch.zeros(2, 4)))  # FA4 returns (out, lse)
    for major in (9, 10):
        _capability(monkeypatch, major)
        assert backends.choose_varlen_kernel() == "fa4"
    backends._varlen_kernel.cache_clear()
    assert backends._varlen_kernel()(OUT, OUT, OUT, CU, 4, 0.5) is OUT
    ((args, kwargs),) = calls
    assert args == (OUT, OUT, OUT)
    assert kwargs == {
        "cu_seqlens_q": CU,
        "cu_seqlens_k": CU,
        "max_seqlen_q": 4,
        "max_seqlen_k": 4,
        "softmax_scale": 0.5,
        "causal": True,
    }


def test_hopper_kernels_are_skipped_on_older_cards(monkeypatch, installed):
    fa3 = installed("flash_attn_interface", OUT)
    fa4 = installed("flash_attn.cute", OUT)
    _capability(monkeypatch, 8)
    assert backends.choose_varlen_kernel() == "torch"
    backends._varlen_kernel()
    assert not fa3 and not fa4


def test_flash_attention_2_is_preferred_to_pytorch(monkeypatch, installed):
    calls = installed("flash_attn", OUT)
    _capability(monkeypatch, 8)
    assert backends.choose_varlen_kernel() == "fa2"
    assert backends._varlen_kernel()(OUT, OUT, OUT, CU, 4, 0.5) is OUT
    ((args, kwargs),) = calls
    assert args[3:7] == (CU, CU, 4, 4) and kwargs == {"softmax_scale": 0.5, "causal": True}


def test_the_package_flash_attn_4_installs_is_not_flash_attn_2(monkeypatch, installed):
    installed("flash_attn", function=False)  # flash-attn-4's flash_attn holds only flash_attn.cute
    _capability(monkeypatch, 8)
    assert backends.choose_varlen_kernel() == "torch"


def test_the_environment_names_the_kernel(monkeypatch, installed):
    installed("flash_attn_interface", OUT)
    installed("flash_attn.cute", OUT)
    _capability(monkeypatch, 9)
    for name in ("fa4", "torch", "fa3"):
        monkeypatch.setenv(backends.VARLEN_KERNEL_ENV, name)
        assert backends.choose_varlen_kernel() == name
    assert backends.choose_varlen_kernel("fa4") == "fa4"  # an explicit argument wins


def test_a_named_kernel_must_exist_and_be_installed(monkeypatch, installed):
    _capability(monkeypatch, 9)
    with pytest.raises(ValueError, match="unknown varlen kernel 'fa5'"):
        backends.choose_varlen_kernel("fa5")
    monkeypatch.setenv(backends.VARLEN_KERNEL_ENV, "fa4")
    with pytest.raises(RuntimeError, match="'fa4' was asked for .* not installed"):
        backends.choose_varlen_kernel()


def test_an_install_that_does_not_import_is_skipped_with_a_warning(monkeypatch, installed):
    installed("flash_attn.cute", imports=False)  # e.g. flash-attn-4 without the CuTe DSL packages
    _capability(monkeypatch, 9)
    with pytest.warns(RunWarning, match="flash_attn.cute is installed but does not import"):
        assert backends.choose_varlen_kernel() == "torch"
    with pytest.warns(RunWarning), pytest.raises(RuntimeError, match="does not import"):
        backends.choose_varlen_kernel("fa4")
