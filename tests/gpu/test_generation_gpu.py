"""Batched greedy generation on a GPU: the same tokens as transformers' own ``generate`` (fp32, so that
no kernel difference can flip a token), prompts of different lengths decoded together."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from anchor_lightning.eval.generation import GenerationStats, generate_batch
from tests.conftest import tiny_config

pytestmark = pytest.mark.gpu


def test_generation_equals_generate_on_cuda():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = LlamaForCausalLM(tiny_config("llama", max_position_embeddings=4096)).cuda().eval()
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (900, 33, 2048, 7)]
    stats = GenerationStats()
    ours = generate_batch(model, prompts, 24, {2}, stats=stats)
    for prompt, got in zip(prompts, ours):
        ref = model.generate(
            torch.tensor([prompt]).cuda(), max_new_tokens=24, do_sample=False, eos_token_id=2, pad_token_id=0
        )
        ref = ref[0, len(prompt) :].tolist()
        assert got == (ref[: ref.index(2)] if 2 in ref else ref)
    assert stats.prefill_tokens == sum(map(len, prompts)) and stats.decode_seconds > 0
    assert (stats.graph_batches, stats.eager_batches) == (1, 0)  # the decode steps ran from a CUDA graph


def test_graph_decode_equals_eager_decode_in_bf16():
    """The captured step replays exactly what the eager step computes (same kernels, same buffers)."""
    from anchor_lightning.eval import generation

    model = LlamaForCausalLM(tiny_config("llama", max_position_embeddings=4096)).cuda().to(torch.bfloat16).eval()
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (1500, 64, 700)]
    graphed = GenerationStats()
    ours = generate_batch(model, prompts, 40, {2}, stats=graphed)
    eager = GenerationStats()
    original = generation._DecodeStep.run
    try:
        generation._DecodeStep.run = generation._DecodeStep.step  # no capture: every step eagerly
        again = generate_batch(model, prompts, 40, {2}, stats=eager)
    finally:
        generation._DecodeStep.run = original
    assert ours == again
    assert graphed.graph_batches == 1 and eager.graph_batches == 0
