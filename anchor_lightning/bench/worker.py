"""One benchmark contender, run in its own process: build the model, time training steps, print JSON.

    python -m anchor_lightning.bench.worker '<json spec>'

Contenders (``spec["kind"]``):

* ``ours``: this project's training step (``PackedCausalLM`` with an anchor backend and the chunked or
  fused loss on hidden states, our packed batch), any ``mode``/``backend``; with ``varlen`` on CUDA,
  ``varlen_kernel`` names the FlashAttention kernel (``auto``: the backend's choice; recorded);
* ``hf_flex``: plain transformers on the same documents packed with restarting ``position_ids`` and
  ``attn_implementation="flex_attention"``, loss through ``labels`` (Liger's kernels when ``liger``);
* ``hf_sdpa_full``: plain transformers, SDPA causal attention over the whole row (Liger when ``liger``).

Every contender: the same model shape and random init, the same documents, fused AdamW, ``precision``
``bf16`` (weights cast to bf16, as the peers' published numbers) or ``fp32-master`` (fp32 weights under
bf16 autocast, this project's training default), optional activation checkpointing. Time is the
median of the timed steps after warm-up, each synchronised; memory is the peak allocated.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np
import torch

from anchor_lightning.attention.varlen_kernels import VARLEN_KERNEL_ENV
from anchor_lightning.bench.documents import document_lengths
from anchor_lightning.data.batch import to_device
from anchor_lightning.paths import atomic_write


def _documents(spec: dict) -> list[list[int]]:
    rng = np.random.default_rng(spec["seed"])
    lengths = document_lengths(spec["documents"], spec["seq_len"] * 2, spec["seed"])
    return [[1] + rng.integers(3, spec["vocab_size"], size=n - 1).tolist() for n in lengths]


def _config(spec: dict):
    """The model's config: a HF config directory/file (``spec["config"]``), else a Llama of the spec's shape."""
    from transformers import AutoConfig, LlamaConfig

    if spec.get("config"):
        config = AutoConfig.from_pretrained(spec["config"])
        config.use_cache = False
        if spec.get("layers"):  # fewer layers: dry runs
            config.num_hidden_layers = spec["layers"]
        return config
    return LlamaConfig(
        vocab_size=spec["vocab_size"],
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["kv_heads"],
        max_position_embeddings=spec["seq_len"],
        use_cache=False,
    )


def _ours(spec: dict, device: torch.device):
    from anchor_lightning.attention.backends import default_layout
    from anchor_lightning.attention.varlen_kernels import choose_varlen_kernel, runs_varlen_kernel
    from anchor_lightning.data.batch import collate_rows
    from anchor_lightning.data.packing import PackingSpec, pack_documents
    from anchor_lightning.model.build import build_model, configure
    from anchor_lightning.model.causal_lm import PackedCausalLM
    from anchor_lightning.model.speed import SpeedSettings, speed_up
    from anchor_lightning.model.step import StepSettings, packed_loss

    layout = default_layout(spec["backend"], spec["mode"])
    if runs_varlen_kernel(spec["backend"], spec["mode"], device.type):  # which kernel ran is recorded
        spec["varlen_kernel"] = choose_varlen_kernel(spec.get("varlen_kernel"))
        os.environ[VARLEN_KERNEL_ENV] = spec["varlen_kernel"]
    documents = _documents(spec)
    start = time.perf_counter()
    rows, _ = pack_documents(documents, PackingSpec(spec["seq_len"], layout, 1, (1,)))
    packed = time.perf_counter()
    batch = collate_rows(rows[:1], spec["mode"], layout)
    # host work per row: packing (done once and cached in training) and collation (per batch, in the loader)
    spec["pack_ms"], spec["collate_ms"] = (packed - start) * 1e3, (time.perf_counter() - packed) * 1e3
    batch = to_device(batch, device)
    model = PackedCausalLM(build_model(configure(_config(spec), spec["seq_len"]), spec["backend"])).to(device)
    checkpointing = spec["checkpointing"]
    layers = None if isinstance(checkpointing, bool) else int(checkpointing)
    offload = spec.get("offload", False)
    speed = SpeedSettings(
        kernels=spec.get("kernels", "auto"),
        activation_checkpointing=bool(checkpointing),
        checkpoint_layers=layers,
        mlp_tile=spec.get("mlp_tile"),
        float8=spec.get("float8"),
        float8_layers=spec.get("float8_layers", "auto"),
        float8_compile=spec.get("float8_compile", True),
        compile_layers=spec.get("compile_layers", False),
    )
    spec["kernels_applied"], converted = speed_up(model.lm, speed, device.type)
    spec["float8_converted"] = len(converted)

    settings = StepSettings(spec["backend"], spec.get("loss", "auto"), offload_activations=offload)

    def step():  # fit's step: the summed loss over the step's labelled slots
        return packed_loss(model, batch, settings) / batch["num_targets"]

    return model, step, batch["doc_ids"][0].cpu().numpy()


def _hf(spec: dict, device: torch.device):
    from transformers import AutoModelForCausalLM

    config = _config(spec)
    if spec.get("liger"):  # as users apply it: the family's kernels, before the model is built
        import liger_kernel.transformers as liger

        getattr(liger, f"apply_liger_kernel_to_{config.model_type}")()
    docs = _documents(spec)
    ids: list[int] = []
    positions: list[int] = []
    doc_of: list[int] = []
    for d, doc in enumerate(docs):
        take = doc[: spec["seq_len"] - len(ids)]
        ids += take
        positions += list(range(len(take)))
        doc_of += [d] * len(take)
        if len(ids) == spec["seq_len"]:
            break
    implementation = "flex_attention" if spec["kind"] == "hf_flex" else "sdpa"
    model = AutoModelForCausalLM.from_config(config, attn_implementation=implementation).to(device)
    if spec.get("float8"):  # the peer gets FP8 too: the same layers through the same torchao call
        from anchor_lightning.model.float8 import convert_to_float8

        layers, compiled = spec.get("float8_layers", "auto"), spec.get("float8_compile", True)
        spec["float8_converted"] = len(convert_to_float8(model, spec["float8"], layers, compiled))
    if spec["checkpointing"]:  # the peer gets the same settings as ours: all layers, or the first N
        from anchor_lightning.model.build import enable_activation_checkpointing

        checkpointing = spec["checkpointing"]
        enable_activation_checkpointing(model, None if isinstance(checkpointing, bool) else int(checkpointing))
    input_ids = torch.tensor([ids], device=device)
    labels = input_ids.clone()
    position_ids = torch.tensor([positions if spec["kind"] == "hf_flex" else list(range(len(ids)))], device=device)

    def step():
        return model(input_ids=input_ids, position_ids=position_ids, labels=labels, use_cache=False).loss

    doc_ids = np.zeros(len(ids), dtype=np.int64) if spec["kind"] == "hf_sdpa_full" else np.asarray(doc_of)
    return model, step, doc_ids


KERNEL_CLASSES = (  # (class, substrings of CUDA kernel names), first match wins
    ("attention", ("flash", "fmha", "attention", "attn", "cudnn")),
    ("matmul", ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas")),
    ("fused norm/rope/swiglu/loss", ("triton", "swiglu", "rms_norm", "rope", "cross_entropy", "element_mul")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
)


def kernel_class(name: str) -> str:
    lower = name.lower()
    return next((cls for cls, keys in KERNEL_CLASSES if any(k in lower for k in keys)), "other")


def train_step(step, optimizer, autocast: bool, device: torch.device) -> tuple[torch.Tensor, float]:
    """Forward, backward, optimizer step, synchronised; the loss and the seconds it took."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = step()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return loss, time.perf_counter() - start


def _profile(spec: dict, step, optimizer, autocast: bool, device: torch.device) -> None:
    """One more step under the profiler: device time per kernel class and the top kernels, written to
    ``spec["profile"]/<name>-<row>.txt``."""
    from pathlib import Path

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_step(step, optimizer, autocast, device)
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"] if device.type == "cuda" else []
    total = sum(e.device_time_total for e in kernels) or 1.0
    by_class: dict[str, float] = {}
    for e in kernels:
        by_class[kernel_class(e.key)] = by_class.get(kernel_class(e.key), 0.0) + e.device_time_total
    kernel = f"-{spec['varlen_kernel']}" if spec.get("varlen_kernel") else ""
    lines = [f"{spec['name']}{kernel} row {spec['seq_len']}: device time {total / 1e3:.1f} ms"]
    lines += [
        f"  {cls:<16} {t / 1e3:8.1f} ms {t / total:6.1%}" for cls, t in sorted(by_class.items(), key=lambda x: -x[1])
    ]
    lines += [
        f"  {e.device_time_total / 1e3:8.1f} ms {e.count:5d}x  {e.key[:110]}"
        for e in sorted(kernels, key=lambda e: -e.device_time_total)[:25]
    ]
    out = Path(spec["profile"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{spec['name']}{kernel}-{spec['seq_len']}.txt", "\n".join(lines) + "\n")


def run(spec: dict) -> dict:
    from anchor_lightning.bench.flops import flops_per_token
    from anchor_lightning.model.flops import peak_flops

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model, step, doc_ids = (_ours if spec["kind"] == "ours" else _hf)(spec, device)
    if spec["precision"] == "bf16":
        model.to(torch.bfloat16)
    autocast = spec["precision"] == "fp32-master" and device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        loss, seconds = train_step(step, optimizer, autocast, device)
        if i >= spec["warmup"]:
            times.append(seconds)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {i}")
    if spec.get("profile"):
        _profile(spec, step, optimizer, autocast, device)
    seconds = statistics.median(times)
    tokens = spec["seq_len"]
    per_token = flops_per_token(model, doc_ids, spec["mode"] if spec["kind"] == "ours" else None)
    peak = peak_flops(torch.cuda.get_device_name()) if device.type == "cuda" else None
    return {
        **spec,
        "step_seconds": seconds,
        "tokens_per_sec": tokens / seconds,
        "flops_per_token": per_token,
        "mfu": per_token * tokens / seconds / peak if peak else None,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "loss": float(loss),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
