"""The attention kernel of RULER's prefill: chosen once per run (auto: cuDNN where it agrees with
FlashAttention, on a CUDA card), refused in one line where it cannot run, recorded in ruler.json, and
the same tokens as SDPA's own choice wherever the chosen priority applies. (On the GPU:
tests/gpu/test_generation_gpu.py.)"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from anchor_lightning.errors import UserError
from anchor_lightning.eval.generation import generate_batch, prefill_kernel_for
from anchor_lightning.eval.ruler.suite import RulerSettings
from tests.conftest import tiny_config


def test_on_a_cpu_auto_is_sdpas_own_choice_and_a_cuda_kernel_is_refused_in_one_line():
    model = LlamaForCausalLM(tiny_config("llama")).eval()
    assert prefill_kernel_for("auto", model) == "sdpa"
    for kernel in ("cudnn", "flash"):
        with pytest.raises(UserError, match=f"{kernel} needs a CUDA device") as err:
            prefill_kernel_for(kernel, model)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="unknown prefill kernel 'fa3'"):
        prefill_kernel_for("fa3", model)


def test_ruler_settings_refuse_an_unknown_kernel_before_any_work():
    with pytest.raises(UserError, match="unknown prefill kernel 'fast'"):
        RulerSettings(prefill_kernel="fast").check()


def test_every_priority_gives_the_same_tokens_where_it_applies():
    """On a CPU neither cuDNN nor FlashAttention-2 exists: each priority list falls through to what SDPA
    has there, so the tokens are those of SDPA's own choice (a priority that broke the prefill would
    change them or raise)."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config("llama")).eval()
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (40, 9, 77)]
    plain = generate_batch(model, prompts, 8, set())
    for kernel in ("cudnn", "flash"):
        assert generate_batch(model, prompts, 8, set(), prefill_kernel=kernel) == plain
