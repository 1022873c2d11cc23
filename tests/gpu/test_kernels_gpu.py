"""GPU: Liger's fused RMSNorm/RoPE/SwiGLU on our model give the plain model's loss and gradients (bf16),
the memory savers (selective checkpointing, MLP tiling, offload) train a step with the same loss, and
decoder layers compiled on their own (``model.compile_layers``) over Liger's kernels and the varlen
attention kernel give the eager loss and gradients, every layer running the graphs the first compiled.

Liger patches transformers' Llama module for the whole process, so the comparison runs in a fresh
(spawned) interpreter where the plain model is built and run first."""

from __future__ import annotations

import multiprocessing

import pytest
import torch

pytestmark = pytest.mark.gpu


def _loss_and_grad(net, batch, offload=False):
    from anchor_lightning.attention.backends import prepare
    from anchor_lightning.model.kernels import offloaded_activations

    net.zero_grad(set_to_none=True)
    with offloaded_activations(offload), torch.autocast("cuda", dtype=torch.bfloat16):
        loss = (
            net(batch["input_ids"], batch["position_ids"], batch["labels"], prepare(batch, "varlen"))
            / batch["num_targets"]
        )
    loss.backward()
    return loss.item(), torch.cat([p.grad.float().flatten() for p in net.parameters()])


def _compare() -> dict:
    from transformers import LlamaConfig

    from anchor_lightning.data.batch import collate_rows
    from anchor_lightning.data.packing import PackingSpec, pack_documents
    from anchor_lightning.model.build import build_model, configure
    from anchor_lightning.model.causal_lm import PackedCausalLM
    from anchor_lightning.model.speed import SpeedSettings, speed_up
    from tests.gpu.test_backends_gpu import CONFIG, SEQ_LEN, byte_documents

    packed, _ = pack_documents(byte_documents(), PackingSpec(SEQ_LEN, "per_doc", 256, (256,)))
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in collate_rows(packed[:1], "anchor", "per_doc").items()}

    def net():
        torch.manual_seed(0)
        return PackedCausalLM(build_model(configure(LlamaConfig(**CONFIG), SEQ_LEN), "varlen")).cuda().train()

    plain = _loss_and_grad(net(), batch)
    out = {}
    for name, options, offload in (
        ("liger", {}, False),
        (
            "liger+selective+tile+offload",
            {"activation_checkpointing": True, "checkpoint_layers": 4, "mlp_tile": 1000},
            True,
        ),
    ):
        model = net()
        applied, _ = speed_up(model.lm, SpeedSettings(kernels="liger", **options), "cuda")
        fused = _loss_and_grad(model, batch, offload)
        cosine = torch.nn.functional.cosine_similarity(plain[1], fused[1], dim=0).item()
        out[name] = (
            applied,
            plain[0],
            fused[0],
            cosine,
            type(model.lm.model.norm).__name__,
            model.lm.model.norm.forward.__qualname__,
        )
    return out


def test_liger_kernels_and_memory_savers_match_the_plain_model():
    pytest.importorskip("liger_kernel")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        results = pool.apply(_compare)
    for name, (applied, plain, fused, cosine, _norm_type, norm_forward) in results.items():
        print(
            f"{name}: loss plain {plain:.5f} fused {fused:.5f} (rel {abs(fused - plain) / plain:.1e}), "
            f"gradient cosine {cosine:.5f}, final norm forward {norm_forward}"
        )
        assert applied == "liger" and "Liger" in norm_forward
        assert abs(fused - plain) / plain < 1e-2
        assert cosine > 0.99


def _compare_compiled() -> dict:
    """Eager against compiled decoder layers, both over Liger's kernels and the varlen backend, on the
    same packed row, for three passes (the first compiles, the next reuse the graphs); and the graphs a
    2-layer model of the same shapes compiles, which every layer count should share."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from transformers import LlamaConfig

    from anchor_lightning.data.batch import collate_rows
    from anchor_lightning.data.packing import PackingSpec, pack_documents
    from anchor_lightning.model.build import build_model, configure
    from anchor_lightning.model.causal_lm import PackedCausalLM
    from anchor_lightning.model.speed import SpeedSettings, speed_up
    from tests.gpu.test_backends_gpu import CONFIG, SEQ_LEN, byte_documents

    packed, _ = pack_documents(byte_documents(), PackingSpec(SEQ_LEN, "per_doc", 256, (256,)))
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in collate_rows(packed[:1], "anchor", "per_doc").items()}
    results = {}
    for name, layers, compiled in (
        ("eager", CONFIG["num_hidden_layers"], False),
        ("compiled", CONFIG["num_hidden_layers"], True),
        ("compiled, 2 layers", 2, True),
    ):
        torch.manual_seed(0)
        config = LlamaConfig(**dict(CONFIG, num_hidden_layers=layers))
        net = PackedCausalLM(build_model(configure(config, SEQ_LEN), "varlen")).cuda().train()
        torch._dynamo.reset()
        counters.clear()
        speed_up(net.lm, SpeedSettings(kernels="liger", compile_layers=compiled), "cuda")
        results[name] = [_loss_and_grad(net, batch) for _ in range(3)]
        results[name + " graphs"] = (
            counters["stats"]["unique_graphs"],
            sum(counters["graph_break"].values()),
            sorted({reason.splitlines()[0] for reason in counters["graph_break"]}),
            # the whole of each reason: torch names the function that broke the graph past the first line
            sorted(
                {
                    " | ".join(line.strip() for line in reason.splitlines() if line.strip())
                    for reason in counters["graph_break"]
                }
            ),
        )
    return results


def test_compiled_decoder_layers_over_liger_and_varlen_give_the_eager_step():
    from tests.gpu.test_backends_gpu import CONFIG

    pytest.importorskip("liger_kernel")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        results = pool.apply(_compare_compiled)
    graphs, breaks, reasons, details = results["compiled graphs"]
    print(f"compiled layers: {graphs} unique graphs, {breaks} graph breaks {reasons}")
    for detail in details:
        print(f"  graph break: {detail[:600]}")
    for step, ((eager, eager_grad), (compiled, compiled_grad)) in enumerate(zip(results["eager"], results["compiled"])):
        cosine = torch.nn.functional.cosine_similarity(eager_grad, compiled_grad, dim=0).item()
        print(f"pass {step}: loss eager {eager:.5f} compiled {compiled:.5f}, gradient cosine {cosine:.5f}")
        assert abs(compiled - eager) / eager < 1e-2
        assert cosine > 0.99
    assert results["eager graphs"][0] == 0  # nothing compiled without the setting
    # every layer runs the graphs the first compiled (the same code and shapes): as many graphs for
    # CONFIG's layers as for 2; a graph per layer would run into the recompile limit (8) and go eager
    layers = CONFIG["num_hidden_layers"]
    assert 0 < graphs == results["compiled, 2 layers graphs"][0], f"{graphs} graphs for {layers} layers"
