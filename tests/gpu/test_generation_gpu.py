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


def test_the_cudnn_prefill_runs_cudnn_and_gives_flash_attentions_logits():
    """RULER's prefill with cuDNN first (prefill_kernel auto on Hopper), on a model with SmolLM2's
    heads (9 over 3, head dim 64): the kernels that run are cuDNN's and not FlashAttention-2's, in a
    plain forward pass and inside generate_batch, and the logits are FlashAttention's within bf16 noise.
    (Greedy tokens of a random model are not compared: its top two logits can lie closer than that
    noise.)"""
    from torch.profiler import ProfilerActivity, profile

    from anchor_lightning.eval.generation import cudnn_agrees, prefill_attention, prefill_kernel_for

    def cuda_kernels(prof) -> str:
        return " ".join(e.name for e in prof.events() if e.device_type.name == "CUDA")

    torch.manual_seed(0)
    config = tiny_config(
        "llama", hidden_size=576, num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192
    )
    model = LlamaForCausalLM(config).cuda().to(torch.bfloat16).eval()
    agrees = cudnn_agrees(torch.device("cuda", torch.cuda.current_device()), 9, 3, 64, torch.bfloat16)
    assert prefill_kernel_for("auto", model) == ("cudnn" if agrees else "flash")
    ids = torch.randint(3, 97, (1, 5000), generator=torch.Generator().manual_seed(7)).cuda()
    logits, kernels = {}, {}
    for kernel in ("cudnn", "flash"):
        with profile(activities=[ProfilerActivity.CUDA]) as prof, torch.no_grad(), prefill_attention(kernel):
            logits[kernel] = model(input_ids=ids).logits.float()
        kernels[kernel] = cuda_kernels(prof)
    assert "flash_fwd" in kernels["flash"] and "flash_fwd" not in kernels["cudnn"]
    assert "cudnn" in kernels["cudnn"].lower() or "sdpa" in kernels["cudnn"].lower(), kernels["cudnn"][:2000]
    gap = (logits["cudnn"] - logits["flash"]).abs().max() / logits["flash"].abs().max()
    assert gap < 0.02, gap
    prompts = [ids[0, :n].tolist() for n in (3000, 77, 1024)]
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        outputs = generate_batch(model, prompts, 8, set(), prefill_kernel="cudnn")
    assert [len(o) for o in outputs] == [8, 8, 8] and "flash_fwd" not in cuda_kernels(prof)
