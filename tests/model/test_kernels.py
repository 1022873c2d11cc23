"""Memory savers and fused kernels compute the same function: MLP tiling, selective and offloaded
activation checkpointing give the plain model's loss and gradients (float64, CPU)."""

from __future__ import annotations

import pytest
import torch

from anchor_lightning.attention.backends import prepare
from anchor_lightning.errors import UserError
from anchor_lightning.model.build import build_model, configure, enable_activation_checkpointing
from anchor_lightning.model.causal_lm import PackedCausalLM
from anchor_lightning.model.kernels import apply_kernels, offloaded_activations, resolve_kernels, tile_mlp
from anchor_lightning.model.module import AnchorLM
from anchor_lightning.model.speed import SpeedSettings, speed_up
from tests.conftest import VOCAB, packed_batch, tiny_config

SEQ = 128


def _net(family: str = "llama") -> PackedCausalLM:
    torch.manual_seed(0)
    config = configure(tiny_config(family, num_hidden_layers=3), SEQ)
    return PackedCausalLM(build_model(config, "sdpa", dtype=torch.float64)).train()


def _batch():
    g = torch.Generator().manual_seed(3)
    docs = [[1] + torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (50, 30, 70, 40)]
    batch, _ = packed_batch(docs, SEQ, "anchor", "shared", rows=1)
    return batch


def _loss_and_grads(net: PackedCausalLM, batch: dict, offload: bool = False):
    net.zero_grad(set_to_none=True)
    with offloaded_activations(offload):
        loss = net(batch["input_ids"], batch["position_ids"], batch["labels"], prepare(batch, "sdpa"), "chunked")
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


def _assert_same(a, b):
    assert torch.allclose(a[0], b[0], rtol=1e-12, atol=0)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_tiled_mlp_is_the_same_function(family):
    batch = _batch()
    net = _net(family)
    plain = _loss_and_grads(net, batch)
    keys = list(net.state_dict())
    calls = []
    mlp = net.lm.base_model.layers[0].mlp
    mlp.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[-2]))
    tile_mlp(net.lm, 48)
    tiled = _loss_and_grads(net, batch)
    _assert_same(plain, tiled)
    assert list(net.state_dict()) == keys  # checkpoints and exports are unchanged
    # the hook sees the whole row once; inside, the tiles are 48 + 48 + 32 slots (checked on the wrapped forward)
    pieces = []
    inner = mlp._anchor_untiled_forward
    mlp._anchor_untiled_forward = lambda x: pieces.append(x.shape[-2]) or inner(x)
    with torch.no_grad():
        mlp(torch.zeros(1, SEQ, net.lm.config.hidden_size, dtype=torch.float64))
    assert pieces == [48, 48, 32]
    with pytest.raises(ValueError, match="positive"):
        tile_mlp(net.lm, 0)


def test_selective_checkpointing_recomputes_only_the_first_layers():
    batch = _batch()
    net = _net()
    plain = _loss_and_grads(net, batch)
    enable_activation_checkpointing(net.lm, layers=2)
    assert [layer.gradient_checkpointing for layer in net.lm.base_model.layers] == [True, True, False]
    _assert_same(plain, _loss_and_grads(net, batch))
    with pytest.raises(UserError, match="cannot checkpoint 4"):
        enable_activation_checkpointing(_net().lm, layers=4)


def test_offloaded_checkpointing_is_the_same_function_and_keeps_layer_inputs_on_the_host(monkeypatch):
    batch = _batch()
    net = _net()
    plain = _loss_and_grads(net, batch)
    enable_activation_checkpointing(net.lm)
    inputs = []
    for layer in net.lm.base_model.layers:
        layer.register_forward_pre_hook(lambda m, args: inputs.append(args[0].data_ptr()))
    packed = []
    real = torch.autograd.graph.save_on_cpu.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        pack = self.pack_hook
        self.pack_hook = lambda t: packed.append(t.data_ptr()) or pack(t)

    monkeypatch.setattr(torch.autograd.graph.save_on_cpu, "__init__", spy)
    _assert_same(plain, _loss_and_grads(net, batch, offload=True))
    layers = len(net.lm.base_model.layers)
    # the forward's layer inputs went to the host; the recomputation (backward) saves on the device
    assert len(inputs) >= layers and set(inputs[:layers]) <= set(packed)
    assert len(packed) < 20  # only what lies outside the recomputed layers


def test_kernel_choice_is_checked():
    assert resolve_kernels("auto", "cpu") == "none"
    with pytest.raises(ValueError, match="liger-kernel and a CUDA device"):
        resolve_kernels("liger", "cpu")
    with pytest.raises(ValueError, match="unknown kernels"):
        resolve_kernels("triton", "cuda")
    net = _net()
    assert apply_kernels(net.lm, "none", "cpu") == "none"
    settings = SpeedSettings(activation_checkpointing=True, checkpoint_layers=1, mlp_tile=64)
    assert speed_up(net.lm, settings, "cpu") == ("none", [])
    assert [layer.gradient_checkpointing for layer in net.lm.base_model.layers] == [True, False, False]
    assert net.lm.base_model.layers[2].mlp._anchor_tile == 64


def test_module_refuses_inconsistent_memory_options():
    config = {"model_type": "llama", **tiny_config("llama").to_diff_dict()}
    with pytest.raises(UserError, match="need activation_checkpointing"):
        AnchorLM(config=config, checkpoint_layers=1)
    with pytest.raises(UserError, match="positive"):
        AnchorLM(config=config, mlp_tile=0)
    with pytest.raises(UserError, match="unknown kernels"):
        AnchorLM(config=config, kernels="triton")
    module = AnchorLM(config=config, activation_checkpointing=True, checkpoint_layers=1, mlp_tile=32)
    module.configure_model()
    assert module.applied.kernels == "none"
    assert [layer.gradient_checkpointing for layer in module.model.base_model.layers] == [True, False]


@pytest.mark.slow
def test_compiled_decoder_layers_compute_what_the_eager_ones_do():
    """model.compile_layers: each decoder layer compiled on its own gives the eager loss and gradients
    (fp32, CPU), with the state-dict keys unchanged."""
    from anchor_lightning.model.kernels import compile_decoder_layers

    eager, compiled = _net(), _net()
    compiled.load_state_dict(eager.state_dict())
    keys = list(compiled.state_dict())
    compile_decoder_layers(compiled.lm)
    assert list(compiled.state_dict()) == keys
    assert all(layer._compiled_call_impl is not None for layer in compiled.lm.base_model.layers)
    generator = torch.Generator().manual_seed(0)
    docs = [[1, *torch.randint(3, VOCAB, (20 + 9 * k,), generator=generator).tolist()] for k in range(12)]
    batch, _ = packed_batch(docs, 256, "anchor", "shared", rows=2)
    losses = []
    for net in (eager, compiled):
        loss = net(batch["input_ids"], batch["position_ids"], batch["labels"], prepare(batch, "sdpa"))
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], rtol=1e-5)
    for a, b in zip(eager.parameters(), compiled.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_an_evaluation_inside_training_compiles_no_graph_of_its_own():
    """The callbacks evaluate inside ``without_new_graphs``: compiled layers run the graphs training made
    and run eagerly elsewhere, so generation (no gradients, SDPA, a KV cache per layer) compiles nothing;
    the same generation outside it compiles graphs of its own. Compiled with the eager backend: dynamo's
    graphs and guards, without inductor's compile time."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from transformers import LlamaForCausalLM

    from anchor_lightning.model.kernels import without_new_graphs

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config("llama"))
    for layer in model.model.layers:
        layer.compile(backend="eager")
    ids = torch.randint(0, VOCAB, (2, 32))
    try:
        model(ids, labels=ids).loss.backward()
        trained = counters["stats"]["unique_graphs"]
        assert trained >= 1
        prompt = torch.randint(0, VOCAB, (1, 20))
        with without_new_graphs(), torch.no_grad():
            inside = model.generate(prompt, max_new_tokens=4, do_sample=False)
        assert counters["stats"]["unique_graphs"] == trained
        with torch.no_grad():
            outside = model.generate(prompt, max_new_tokens=4, do_sample=False)
        assert counters["stats"]["unique_graphs"] > trained
        assert torch.equal(inside, outside)  # eager or compiled, the same tokens
    finally:
        torch._dynamo.reset()
