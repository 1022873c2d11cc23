"""``python -m anchor_lightning.bench.distributed``: training steps on several GPUs, FSDP2 and Ulysses.

    python -m anchor_lightning.bench.distributed --gpus 2 --rows 65536 --sp 2
    python -m anchor_lightning.bench.distributed --gpus 2 --sp 2 --max-context --start 393216
    python -m anchor_lightning.bench.distributed --gpus 2 --sp 2 --check --rows 65536
    python -m anchor_lightning.bench.distributed --gpus 8 --preset llama2-7b --rows 131072 --sp 2 --modes anchor full

Each configuration runs as its own ``torchrun`` job (an out-of-memory on one rank ends that job, not
the sweep). Parameters are sharded over every rank (fp32 master shards, bf16 compute, fp32 gradient
reduction: ``anchor_lightning.parallel.strategy.build_sharded``); ranks are split into groups of
``--sp`` that share each row (``--sp 1``: plain FSDP, each rank its own row). Reported per
configuration: tokens/s (all GPUs and per GPU), FLOPs per token and MFU by docs/design.md's FLOPs rule, the
largest peak memory of any rank, the loss.

``--check`` compares sequence parallelism with one GPU on the same row instead: every rank builds the
same unsharded model, rank 0 computes the row's loss and gradients alone, then the group computes them
split over its ranks; printed: the loss's relative difference and the gradients' cosine similarity.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from anchor_lightning.bench.common import SHAPE, grid, mfu_and_peak, run_process
from anchor_lightning.data.batch import Batch
from anchor_lightning.paths import atomic_write

PRESETS = {
    "1b": SHAPE,
    # LLaMA-2-7B (meta-llama/Llama-2-7b-hf config): random init, weights are not needed for speed
    "llama2-7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "layers": 32,
        "heads": 32,
        "kv_heads": 32,
        "vocab_size": 32000,
    },
}


# ---------------------------------------------------------------------------------------- driver
def launch(spec: dict, gpus: int, timeout: int) -> dict:
    """Run one configuration under torchrun; rank 0's JSON, or the error."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={gpus}",
        "-m",
        "anchor_lightning.bench.distributed",
        "--worker",
        json.dumps(spec),
    ]
    return run_process(command, spec, timeout, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def table(results: list[dict]) -> str:
    lines = [
        f"{'mode':>6} {'row':>8} {'GPUs':>4} {'SP':>3} {'layers':>6} {'tok/s':>9} {'tok/s/GPU':>9} "
        f"{'GFLOP/tok':>9} {'MFU':>6} {'peak GiB':>8} {'step s':>7}"
    ]
    for r in results:
        head = f"{r['mode']:>6} {r['seq_len']:>8} {r['gpus']:>4} {r['sp']:>3} {r['layers']:>6}"
        if "error" in r:
            lines.append(f"{head}  {r['error']}")
            continue
        mfu, peak = mfu_and_peak(r)
        lines.append(
            f"{head} {r['tokens_per_sec']:>9.0f} {r['tokens_per_sec_per_gpu']:>9.0f} "
            f"{r['flops_per_token'] / 1e9:>9.2f} {mfu:>6} {peak:>8} {r['step_seconds']:>7.2f}"
        )
    return "\n".join(lines)


def step_ratios(results: list[dict]) -> str:
    """Anchor step time over full-attention step time, per row length and group size, where both ran."""
    steps = {(r["mode"], r["seq_len"], r["sp"]): r["step_seconds"] for r in results if "step_seconds" in r}
    lines = [
        f"anchor/full step time at {row} (SP {sp}): {seconds / steps[('full', row, sp)]:.2f}"
        for (mode, row, sp), seconds in sorted(steps.items(), key=lambda x: x[0][1:])
        if mode == "anchor" and ("full", row, sp) in steps
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="python -m anchor_lightning.bench.distributed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--gpus", type=int, default=torch.cuda.device_count() or 2, help="processes (one per GPU)")
    parser.add_argument("--preset", choices=list(PRESETS), default="1b", help="model shape")
    parser.add_argument("--shape", type=json.loads, default={}, help="override fields of the preset")
    parser.add_argument(
        "--config", default=None, metavar="DIR", help="a Hugging Face config directory (instead of a preset)"
    )
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (fewer than the preset: dry runs)")
    parser.add_argument("--rows", type=int, nargs="+", default=[65536])
    parser.add_argument(
        "--modes", nargs="+", default=["anchor"], choices=["anchor", "intra_doc", "intra_doc_reset", "full"]
    )
    parser.add_argument("--backend", default="varlen", choices=["varlen", "sdpa", "flex"])
    parser.add_argument("--sp", type=int, default=1, help="sequence-parallel group size (ranks sharing a row)")
    parser.add_argument("--documents", default="exponential:1500:64:16384")
    parser.add_argument("--checkpointing", choices=["on", "off"], default="on")
    parser.add_argument("--offload", action="store_true", help="checkpointed layer inputs in host memory")
    parser.add_argument("--mlp-tile", type=int, default=None)
    parser.add_argument("--kernels", default="auto", choices=["auto", "liger", "none"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per configuration")
    parser.add_argument(
        "--check", action="store_true", help="compare the sequence-parallel loss/gradients with one GPU"
    )
    parser.add_argument("--max-context", action="store_true", help="probe the longest row that trains")
    parser.add_argument("--start", type=int, default=65536)
    parser.add_argument("--limit", type=int, default=1 << 21)
    parser.add_argument("--out", default="bench-distributed.json")
    args = parser.parse_args(argv)
    if args.worker is not None:
        return [worker(json.loads(args.worker))]

    shape = {**PRESETS[args.preset], **args.shape}
    if args.config is not None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(args.config)
        shape = {"config": args.config, "vocab_size": config.vocab_size, "layers": config.num_hidden_layers}
    if args.layers is not None:
        shape["layers"] = args.layers
    base = {
        **shape,
        "preset": args.preset,
        "gpus": args.gpus,
        "sp": args.sp,
        "backend": args.backend,
        "documents": args.documents,
        "checkpointing": args.checkpointing == "on",
        "offload": args.offload,
        "mlp_tile": args.mlp_tile,
        "kernels": args.kernels,
        "warmup": args.warmup,
        "steps": args.steps,
        "seed": args.seed,
        "check": args.check,
    }
    if args.gpus % args.sp:
        parser.error(f"--gpus {args.gpus} cannot be split into sequence-parallel groups of --sp {args.sp}")
    results = []
    for mode in args.modes:
        if args.max_context:
            best = 0
            for row in grid(args.start, args.limit):
                result = launch(
                    {**base, "mode": mode, "seq_len": row, "warmup": 0, "steps": 1}, args.gpus, args.timeout
                )
                print(json.dumps(result), flush=True)
                results.append(result)
                atomic_write(args.out, json.dumps(results, indent=1))  # each row kept as it comes
                if "error" in result:
                    break
                best = row
            print(f"{mode}: longest trainable row on {args.gpus} GPU(s), sequence-parallel groups of {args.sp}: {best}")
            continue
        for row in args.rows:
            result = launch({**base, "mode": mode, "seq_len": row}, args.gpus, args.timeout)
            print(json.dumps(result), flush=True)
            results.append(result)
            atomic_write(args.out, json.dumps(results, indent=1))  # each row kept as it comes
    if not args.check:
        print(table(results))
        print(step_ratios(results))
    return results


# ---------------------------------------------------------------------------------------- worker
def _batch(spec: dict, data_rank: int, device: torch.device) -> Batch:
    from anchor_lightning.attention.backends import default_layout
    from anchor_lightning.bench.worker import _documents
    from anchor_lightning.data.batch import collate_rows, to_device
    from anchor_lightning.data.packing import PackingSpec, pack_documents

    layout = default_layout(spec["backend"], spec["mode"])
    rows, _ = pack_documents(
        _documents({**spec, "seed": spec["seed"] + data_rank}), PackingSpec(spec["seq_len"], layout, 1, (1,))
    )
    batch = collate_rows(rows[:1], spec["mode"], layout)
    return to_device(batch, device)


def _net(spec: dict, device: torch.device):
    from anchor_lightning.bench.worker import _config
    from anchor_lightning.model.build import build_model, configure
    from anchor_lightning.model.causal_lm import PackedCausalLM

    config = configure(_config(spec), spec["seq_len"])
    return lambda: PackedCausalLM(build_model(config, spec["backend"]))


def _prepare(spec: dict, device: torch.device):
    from anchor_lightning.model.speed import SpeedSettings, speed_up

    settings = SpeedSettings(
        kernels=spec["kernels"],
        activation_checkpointing=spec["checkpointing"],
        mlp_tile=spec["mlp_tile"],
        float8=spec.get("float8"),
    )
    return lambda lm: speed_up(lm, settings, device.type)


def _loss(net, batch: Batch, spec: dict, group) -> torch.Tensor:
    """The summed loss of this rank's slots (all of them without a group): fit's step, under bf16 autocast
    on a GPU."""
    from anchor_lightning.model.step import StepSettings, packed_loss

    settings = StepSettings(spec["backend"], offload_activations=spec["offload"])
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch["input_ids"].is_cuda):
        return packed_loss(net, batch, settings, group)


def _check(spec: dict, device: torch.device, group) -> dict:
    """One GPU against the sequence-parallel group on the same row (unsharded, identical weights)."""
    import torch.distributed as dist

    torch.manual_seed(0)
    with torch.device(device):
        net = _net(spec, device)()
    _prepare(spec, device)(net.lm)
    batch = _batch(spec, 0, device)
    reference_loss = 0.0  # rank 0's
    if dist.get_rank() == 0:
        loss = _loss(net, batch, spec, None)
        loss.backward()
        reference_loss = loss.item()
        reference = torch.cat([p.grad.float().flatten() for p in net.parameters()])
        net.zero_grad(set_to_none=True)
    loss = _loss(net, batch, spec, group)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total, group=group)
    for p in net.parameters():  # replicated parameters: the group's gradients add up
        dist.all_reduce(p.grad, group=group)
    out = {}
    if dist.get_rank() == 0:
        split = torch.cat([p.grad.float().flatten() for p in net.parameters()])
        cosine = torch.nn.functional.cosine_similarity(reference, split, dim=0).item()
        out = {
            "loss_one_gpu": reference_loss,
            "loss_split": total.item(),
            "loss_rel_diff": abs(total.item() - reference_loss) / abs(reference_loss),
            "grad_cosine": cosine,
            "grad_rel_norm_diff": ((split - reference).norm() / reference.norm()).item(),
        }
    return out


def worker(spec: dict) -> dict:
    """One configuration on every rank of this torchrun job; rank 0 prints the result."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from anchor_lightning.bench.flops import flops_per_token
    from anchor_lightning.model.flops import peak_flops
    from anchor_lightning.parallel.strategy import build_sharded

    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        world, rank, sp = dist.get_world_size(), dist.get_rank(), spec["sp"]
        mesh = init_device_mesh(device.type, (world // sp, sp), mesh_dim_names=("data", "sequence"))
        group = mesh["sequence"].get_group() if sp > 1 else None
        data_rank = mesh["data"].get_local_rank()
        result = {**spec, "world": world}
        if spec["check"]:
            result.update(_check(spec, device, group))
        else:
            shard_mesh = init_device_mesh(device.type, (world,), mesh_dim_names=("shard",))
            torch.manual_seed(0)
            net = build_sharded(_net(spec, device), shard_mesh, device, prepare=_prepare(spec, device), bf16=cuda)
            batch = _batch(spec, data_rank, device)
            targets = torch.tensor(float(batch["num_targets"]), device=device)
            dist.all_reduce(targets)
            targets = targets.item() / sp  # each row counted once per group member
            optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5, fused=cuda)
            times = []
            for i in range(spec["warmup"] + spec["steps"]):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                loss = _loss(net, batch, spec, group)
                (loss * world / targets).backward()  # FSDP averages gradients over all ranks
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.synchronize()
                if i >= spec["warmup"]:
                    times.append(time.perf_counter() - start)
            total = loss.detach().float().clone()
            dist.all_reduce(total)
            peak = torch.tensor(torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0, device=device)
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
            seconds = statistics.median(times)
            tokens = world // sp * spec["seq_len"]  # one row per sequence-parallel group
            per_token = flops_per_token(net, batch["doc_ids"][0].cpu().numpy(), spec["mode"])
            peak_gpu = peak_flops(torch.cuda.get_device_name()) if cuda else None
            result.update(
                step_seconds=seconds,
                tokens_per_sec=tokens / seconds,
                tokens_per_sec_per_gpu=tokens / seconds / world,
                flops_per_token=per_token,
                mfu=per_token * tokens / seconds / world / peak_gpu if peak_gpu else None,
                peak_gib=peak.item() if cuda else None,
                loss=total.item() / targets,
                device=torch.cuda.get_device_name() if cuda else "cpu",
            )
            if not torch.isfinite(torch.tensor(result["loss"])):
                raise FloatingPointError(f"non-finite loss {result['loss']}")
        if rank == 0:
            print(json.dumps(result), flush=True)
        return result
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
