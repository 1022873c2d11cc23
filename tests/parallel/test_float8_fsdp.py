"""FP8 linear layers under FSDP2, on the CPU (torch's CPU build runs torchao's FP8 matmuls): two gloo
processes, each decoder layer and the root sharded as ``ShardedStrategy`` shards them, the projections
converted to ``Float8Linear`` before sharding (``speed.speed_up``'s order). The loss and every
parameter's gradient equal one process's FP8 model on the same weights and rows: the FP8 scales are
computed on the gathered weights, so sharding changes nothing."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from anchor_lightning.attention.backends import IMPLEMENTATION_NAMES, prepare
from anchor_lightning.model.build import build_model, configure
from anchor_lightning.model.causal_lm import PackedCausalLM
from anchor_lightning.model.float8 import convert_to_float8
from anchor_lightning.parallel.strategy import build_sharded
from tests.conftest import FIRST, VOCAB, packed_batch, tiny_config

pytestmark = pytest.mark.slow  # two gloo processes

SEQ_LEN = 64
WORLD = 2
BACKEND = "sdpa"


def config():
    return configure(tiny_config("llama", hidden_size=64, intermediate_size=128), SEQ_LEN)


def batch():
    g = torch.Generator().manual_seed(5)
    docs = [[FIRST] + torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (17, 9, 21, 12, 30, 25)]
    return packed_batch(docs, SEQ_LEN, "anchor", "shared", rows=2)[0]


def loss_of(net, rows) -> torch.Tensor:
    net.lm.set_attn_implementation(IMPLEMENTATION_NAMES[BACKEND])
    return net(rows["input_ids"], rows["position_ids"], rows["labels"], prepare(rows, BACKEND))


def worker(rank: int, folder: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=WORLD)
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        net = build_sharded(
            lambda: PackedCausalLM(build_model(config(), BACKEND)),
            mesh,
            torch.device("cpu"),
            pretrained=f"{folder}/model",
            prepare=lambda lm: convert_to_float8(lm, "tensorwise", "all"),
            bf16=False,
        )
        converted = sum(type(m).__name__ == "Float8Linear" for m in net.modules())
        loss = loss_of(net, batch())  # every rank the same rows: the averaged gradient is one process's
        loss.backward()
        grads = {name: p.grad.full_tensor() for name, p in net.named_parameters()}
        if rank == 0:
            torch.save({"loss": loss.detach(), "grads": grads, "converted": converted}, f"{folder}/result.pt")
    finally:
        dist.destroy_process_group()


def test_fp8_layers_under_fsdp2_give_one_process_loss_and_gradients(tmp_path):
    torch.manual_seed(0)
    build_model(config(), BACKEND).save_pretrained(tmp_path / "model")
    mp.spawn(worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    result = torch.load(tmp_path / "result.pt")

    net = PackedCausalLM(build_model(config(), BACKEND, str(tmp_path / "model")))
    names = convert_to_float8(net.lm, "tensorwise", "all")
    assert result["converted"] == len(names) == 2 * 7  # every projection of both layers
    loss = loss_of(net, batch())
    loss.backward()
    assert result["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    plain = PackedCausalLM(build_model(config(), BACKEND, str(tmp_path / "model")))
    assert abs(loss_of(plain, batch()).item() - loss.item()) > 1e-4  # the FP8 matmuls did run
    for name, p in net.named_parameters():
        diff = (result["grads"][name] - p.grad).abs().max() / p.grad.abs().max()
        assert diff <= 1e-5, (name, float(diff))
