"""FP8 linear layers (model/float8.py) on the CPU: which layers convert, the refusals, and that a
converted model reads and writes the same checkpoint tensors as a bf16 one. The FP8 step itself runs
on the GPU machine (tests/gpu/test_float8_gpu.py)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from anchor_lightning.errors import UserError
from anchor_lightning.model.float8 import (
    GRAPHS_PER_SHAPE,
    check_float8,
    convert_to_float8,
    decoder_linear,
    layer_filter,
)
from anchor_lightning.model.module import AnchorLM
from tests.conftest import VOCAB, tiny_config

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def llama_1b(**overrides) -> LlamaForCausalLM:
    """Llama-3.2-1B's shape on the meta device (no memory): hidden 2048, MLP 8192, 8 KV heads of 64."""
    shape = dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8)
    config = LlamaConfig(vocab_size=128256, num_hidden_layers=2, **{**shape, **overrides})
    with torch.device("meta"):
        return LlamaForCausalLM(config)


def chosen(model, recipe: str, layers: str) -> set[str]:
    keep = layer_filter(recipe, layers)
    return {name.split(".")[-1] for name, module in model.named_modules() if keep(module, name)}


def test_the_refusals_are_one_line_each(monkeypatch):
    check_float8(None, "auto", "cpu", None)  # off: nothing to refuse anywhere
    check_float8("tensorwise", "all")  # names only (the module's constructor)
    for args, message in [
        (("blockwise", "auto"), "unknown float8 recipe 'blockwise' (choose from tensorwise, rowwise, or null)"),
        (("rowwise", "some"), "unknown float8_layers 'some' (choose from auto, all)"),
        (
            ("tensorwise", "auto", "cpu", None),
            "float8 needs a CUDA GPU with FP8 matmuls (compute capability 8.9+), not cpu",
        ),
        (("rowwise", "auto", "cuda", (8, 0)), "not a GPU of compute capability 8.0"),
    ]:
        with pytest.raises(ValueError) as error:
            check_float8(*args)
        assert message in str(error.value) and "\n" not in str(error.value)
    check_float8("rowwise", "auto", "cuda", (9, 0))  # Hopper, torchao installed
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    with pytest.raises(ValueError, match=r"float8 needs torchao: pip install 'anchor-lightning\[gpu\]'"):
        check_float8("tensorwise", "auto", "cuda", (9, 0))


def test_the_module_refuses_an_unknown_recipe_before_building_anything():
    with pytest.raises(UserError, match="unknown float8 recipe"):
        AnchorLM(config=tiny_config("llama").to_dict(), float8="e4m3")  # type: ignore[arg-type]


def test_auto_converts_what_torchao_finds_worth_it_and_never_the_head():
    """torchao's size rules on the 1B shape (weight N x K): tensorwise skips K <= 4096 with N <= 1024 (the
    K/V projections, 512 x 2048); rowwise skips N <= 2048, K <= 1024 and N <= 4096 with K <= 2048, which
    leaves only gate_proj and up_proj (8192 x 2048)."""
    model = llama_1b()
    assert chosen(model, "tensorwise", "auto") == set(PROJECTIONS) - {"k_proj", "v_proj"}
    assert chosen(model, "rowwise", "auto") == {"gate_proj", "up_proj"}
    # SmolLM2-135M's shape (hidden 576, MLP 1536, 3 KV heads of 64): tensorwise takes gate and up (1536 x 576),
    # rowwise nothing
    small = llama_1b(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3)
    assert chosen(small, "tensorwise", "auto") == {"gate_proj", "up_proj"}
    assert chosen(small, "rowwise", "auto") == set()
    # all: every decoder projection, however small; the LM head stays bf16 in every rule
    assert chosen(small, "rowwise", "all") == set(PROJECTIONS)
    assert not decoder_linear(model.lm_head, "lm_head")


def test_dimensions_not_multiple_of_16_stay_in_bf16():
    """Hidden 40: every projection has 40 as one dimension, which FP8 matmuls cannot take."""
    odd = LlamaForCausalLM(tiny_config("llama", hidden_size=40, num_attention_heads=5, num_key_value_heads=5))
    assert chosen(odd, "tensorwise", "all") == set()
    even = LlamaForCausalLM(tiny_config("llama"))  # hidden 32, MLP 64, K/V 16
    assert chosen(even, "tensorwise", "all") == set(PROJECTIONS)


def test_a_converted_model_keeps_the_checkpoint_tensors_and_their_names():
    """Resume and export read the same state dict whether the run trained in FP8 or not: same names,
    shapes and dtypes, and a bf16 checkpoint loaded into a converted model gives back the same tensors."""
    torch.manual_seed(0)
    plain = LlamaForCausalLM(tiny_config("llama"))
    converted = LlamaForCausalLM(tiny_config("llama"))
    names = convert_to_float8(converted, "tensorwise", "all")
    assert len(names) == 2 * len(PROJECTIONS)
    assert all(type(converted.get_submodule(name)).__name__ == "Float8Linear" for name in names)
    before, after = plain.state_dict(), converted.state_dict()
    assert [(k, v.shape, v.dtype) for k, v in before.items()] == [(k, v.shape, v.dtype) for k, v in after.items()]
    converted.load_state_dict(before)
    assert all(torch.equal(before[k], v) for k, v in converted.state_dict().items())
    back = LlamaForCausalLM(tiny_config("llama"))
    back.load_state_dict(converted.state_dict())
    ids = torch.randint(0, VOCAB, (1, 32))
    assert torch.equal(back(ids).logits, plain(ids).logits)


def test_an_fp8_forward_stays_near_the_bf16_one():
    """torch's CPU build runs FP8 matmuls too: the converted model's loss is within a few percent of the
    unconverted one's on the same weights (the GPU test checks a training step)."""
    torch.manual_seed(0)
    plain = LlamaForCausalLM(tiny_config("llama", hidden_size=64, intermediate_size=128)).to(torch.bfloat16)
    converted = LlamaForCausalLM(tiny_config("llama", hidden_size=64, intermediate_size=128)).to(torch.bfloat16)
    converted.load_state_dict(plain.state_dict())
    convert_to_float8(converted, "tensorwise", "all")
    ids = torch.randint(0, VOCAB, (2, 64))
    reference, fp8 = plain(ids, labels=ids).loss.float(), converted(ids, labels=ids).loss.float()
    assert abs(fp8 - reference) / reference < 0.02, (fp8, reference)
    assert not torch.equal(fp8, reference)  # the matmuls did run in FP8


@pytest.mark.slow
def test_compiled_fp8_layers_compute_what_the_eager_ones_do():
    """``float8_compile`` (fit's default) compiles each converted layer: the same loss as the eager
    layers (the fusion reorders no reduction that matters at this tolerance), every layer compiled."""
    torch.manual_seed(0)
    eager = LlamaForCausalLM(tiny_config("llama", hidden_size=64, intermediate_size=128))
    compiled = LlamaForCausalLM(tiny_config("llama", hidden_size=64, intermediate_size=128))
    compiled.load_state_dict(eager.state_dict())
    convert_to_float8(eager, "tensorwise", "all")
    names = convert_to_float8(compiled, "tensorwise", "all", compiled=True)
    assert all(compiled.get_submodule(name)._compiled_call_impl is not None for name in names)
    ids = torch.randint(0, VOCAB, (2, 64))
    a, b = eager(ids, labels=ids).loss, compiled(ids, labels=ids).loss
    assert torch.allclose(a, b, rtol=1e-3), (a, b)
    b.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in compiled.parameters() if p.requires_grad)


def _run_like_fit(model: LlamaForCausalLM) -> None:
    """The states fit calls FP8 layers in: training steps under activation checkpointing (Lightning's
    autocast, its cache off), a validation (no gradients), the RULER callback's generation (autocast
    with its cache, prompts of other lengths, one-token decoding steps), then training again."""
    ids = torch.randint(0, VOCAB, (2, 64))
    model.train()
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            model(ids, labels=ids).loss.backward()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        model(ids, labels=ids)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for length in (40, 90):
            model.generate(torch.randint(0, VOCAB, (1, length)), max_new_tokens=3, do_sample=False)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        model(ids, labels=ids).loss.backward()


@pytest.mark.parametrize("compiled", [True, False])
def test_compiled_fp8_layers_stay_compiled_through_training_validation_and_generation(compiled):
    """Every converted layer runs one compiled function, whose graphs (one per weight shape and state)
    count against one recompile limit: past it a layer silently runs eagerly. ``compiled`` conversion
    makes room for them (GRAPHS_PER_SHAPE per shape, never lowering the limit); without that room the
    default limit of 8 is hit by these four shapes. Compiled with the eager backend here: the graphs
    and guards are dynamo's, without inductor's compile time."""
    import torch._dynamo
    from torch._dynamo.exc import FailOnRecompileLimitHit

    torch._dynamo.reset()  # graphs of earlier tests count against the same function's limit
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config("llama", hidden_size=64, intermediate_size=128))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with torch._dynamo.config.patch(recompile_limit=8, fail_on_recompile_limit_hit=True):
        names = convert_to_float8(model, "tensorwise", "all", compiled=compiled)
        shapes = {model.get_submodule(name).weight.shape for name in names}
        assert len(shapes) == 4  # q/o, k/v, gate/up, down
        assert torch._dynamo.config.recompile_limit == (GRAPHS_PER_SHAPE * 4 if compiled else 8)
        for name in names:
            model.get_submodule(name).compile(backend="eager")
        try:
            if compiled:
                _run_like_fit(model)
                smaller = LlamaForCausalLM(tiny_config("llama", num_key_value_heads=4))  # three shapes
                convert_to_float8(smaller, "tensorwise", "all", compiled=True)
                assert torch._dynamo.config.recompile_limit == GRAPHS_PER_SHAPE * 4  # never lowered
            else:
                with pytest.raises(FailOnRecompileLimitHit):
                    _run_like_fit(model)
        finally:
            torch._dynamo.reset()
