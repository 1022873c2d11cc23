"""``python -m anchor_lightning.bench``: training throughput against the strongest peer, on one card.

    python -m anchor_lightning.bench --rows 32768 65536 --out bench.json
    python -m anchor_lightning.bench --rows 65536 --documents data.tokenized.jsonl --contenders ours-anchor-varlen hf-flex-liger
    python -m anchor_lightning.bench --max-context --contenders ours-anchor-varlen hf-flex-liger

Each contender runs in its own subprocess (an out-of-memory or a compile cache cannot taint the
next), in alternating order per row length; the table gives tokens/s, FLOPs per token, MFU
(docs/design.md's FLOPs rule over the card's bf16 peak, 989 TFLOP/s on H100/H200), peak memory and the ratio to
the fastest peer at that length.
``--max-context`` finds, per contender, the longest row (powers of two and their midpoints) that
completes full training steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from anchor_lightning.attention.varlen_kernels import VARLEN_KERNELS, runs_varlen_kernel
from anchor_lightning.bench.common import SHAPE, grid, mfu_and_peak, run_process
from anchor_lightning.bench.documents import document_lengths, lengths_summary
from anchor_lightning.paths import atomic_write

CONTENDERS: dict[str, dict[str, Any]] = {
    "ours-anchor-varlen": {"kind": "ours", "mode": "anchor", "backend": "varlen"},
    "ours-anchor-flex": {"kind": "ours", "mode": "anchor", "backend": "flex"},
    "ours-full-varlen": {"kind": "ours", "mode": "full", "backend": "varlen"},
    "ours-anchor-sdpa": {"kind": "ours", "mode": "anchor", "backend": "sdpa"},
    "hf-flex": {"kind": "hf_flex", "liger": False},
    "hf-flex-liger": {"kind": "hf_flex", "liger": True},
    "hf-sdpa-full-liger": {"kind": "hf_sdpa_full", "liger": True},
    "hf-sdpa-full": {"kind": "hf_sdpa_full", "liger": False},
}
PEERS = {name for name, c in CONTENDERS.items() if c["kind"] != "ours"}


def run_one(spec: dict, timeout: int) -> dict:
    """One contender in its own process."""
    return run_process([sys.executable, "-m", "anchor_lightning.bench.worker", json.dumps(spec)], spec, timeout)


def label(result: dict) -> str:
    """The contender's name, with the FlashAttention kernel where one was chosen, the fused kernels where
    ours were named (``--kernels``), whether its layers were compiled, and the FP8 recipe."""
    kernel = result.get("varlen_kernel")
    name = f"{result['name']}:{kernel}" if kernel else result["name"]
    name += f"+kernels:{result['kernels']}" if result.get("kernels", "auto") != "auto" else ""
    name += "+compiled" if result.get("compile_layers") else ""
    return f"{name}+fp8:{result['float8']}" if result.get("float8") else name


def _ckpt(result: dict) -> str:
    setting = result.get("checkpointing")
    return "all" if setting is True else "-" if setting is False or setting is None else str(setting)


def table(results: list[dict]) -> str:
    lines = [
        f"{'contender':>26} {'row':>7} {'precision':>11} {'ckpt':>4} {'tok/s':>9} {'GFLOP/tok':>9} "
        f"{'MFU':>6} {'peak GiB':>8} {'vs best peer':>12}"
    ]
    for row in sorted({r["seq_len"] for r in results}):
        at = [r for r in results if r["seq_len"] == row]
        for r in at:
            # the best peer in the same linear precision (bf16 against bf16, FP8 against FP8)
            peers = [
                p["tokens_per_sec"]
                for p in at
                if p["name"] in PEERS and "error" not in p and p.get("float8") == r.get("float8")
            ]
            best = max(peers) if peers else None
            if "error" in r:
                lines.append(f"{label(r):>26} {row:>7} {r['precision']:>11} {_ckpt(r):>4}  {r['error']}")
                continue
            ratio = f"{r['tokens_per_sec'] / best:.2f}x" if best else "-"
            mfu, peak = mfu_and_peak(r)
            lines.append(
                f"{label(r):>26} {row:>7} {r['precision']:>11} {_ckpt(r):>4} "
                f"{r['tokens_per_sec']:>9.0f} {r['flops_per_token'] / 1e9:>9.2f} {mfu:>6} {peak:>8} {ratio:>12}"
            )
    return "\n".join(lines)


def host_work(results: list[dict]) -> str:
    """Our host work per row against the step: packing (cached in training) and collation (per batch)."""
    lines = ["host work per row (ours): packing (done once and cached in training), collation (each batch)"]
    for r in results:
        if "collate_ms" in r and "step_seconds" in r:
            share = (r["pack_ms"] + r["collate_ms"]) / (r["step_seconds"] * 1e3)
            lines.append(
                f"  {label(r):>24} {r['seq_len']:>7}: pack {r['pack_ms']:.1f} ms, collate {r['collate_ms']:.1f} ms "
                f"= {share:.2%} of the step"
            )
    return "\n".join(lines)


def checkpoint_settings(policy: str, layers: int | None) -> list:
    """Activation-checkpointing settings to try in order, the fastest first; the first that fits is the
    contender's best setting. The same search for every contender (ours and the peers alike), at every
    row length: ``auto`` tries none, then (with ``layers``) only the first ``layers`` decoder layers,
    then all of them; ``on`` starts at the selective setting."""
    if policy == "off":
        return [False]
    selective = [layers] if layers is not None else []
    if policy == "on":
        return [*selective, True]
    return [False, *selective, True]


def run_best(spec: dict, settings: list, timeout: int) -> dict:
    """The first setting that completes; out-of-memory attempts are kept under ``tried``."""
    failed: list[dict] = []
    for i, setting in enumerate(settings):
        result = run_one({**spec, "checkpointing": setting}, timeout)
        if result.get("error") != "out of memory" or i == len(settings) - 1:
            return {**result, "tried": failed} if failed else result
        failed.append({"checkpointing": setting, "error": result["error"]})
    raise ValueError("no checkpointing setting to try")


def max_context(base: dict, timeout: int, start: int, limit: int) -> tuple[int, list[dict]]:
    """The longest row of the grid that trains (one full step); stops at the first failure."""
    tried, best = [], 0
    for row in grid(start, limit):
        result = run_one({**base, "seq_len": row, "warmup": 0, "steps": 1}, timeout)
        tried.append(result)
        if "error" in result:
            break
        best = row
    return best, tried


def contender_specs(name: str, row: int, shape: dict, args: argparse.Namespace) -> list[dict]:
    """The runs of one contender at one row length: one per precision and, for our varlen anchor
    contenders, per FlashAttention kernel asked for."""
    contender = CONTENDERS[name]
    ours = contender["kind"] == "ours"
    base = {
        **shape,
        **contender,
        "name": name,
        "seq_len": row,
        "documents": args.documents,
        "seed": args.seed,
        "warmup": args.warmup,
        "steps": args.steps,
        "mode": contender.get("mode"),
        "profile": args.profile,
    }
    if ours:
        base.update(
            kernels=args.kernels, offload=args.offload, mlp_tile=args.mlp_tile, compile_layers=args.compile_layers
        )
    kernels = args.varlen_kernel if ours and runs_varlen_kernel(contender["backend"], contender["mode"]) else [None]
    return [
        {
            **base,
            "precision": precision,
            "float8": None if float8 == "none" else float8,
            "float8_layers": args.float8_layers,
            "float8_compile": not args.float8_eager,
            **({"varlen_kernel": kernel} if kernel else {}),
        }
        for precision in args.precision
        for float8 in args.float8
        for kernel in kernels
    ]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m anchor_lightning.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[32768, 65536], help="row lengths")
    parser.add_argument(
        "--contenders",
        nargs="+",
        default=["ours-anchor-varlen", "ours-anchor-flex", "ours-full-varlen", "hf-flex-liger", "hf-sdpa-full-liger"],
        choices=list(CONTENDERS),
    )
    parser.add_argument(
        "--documents",
        default="exponential:1500:64:16384",
        help="exponential:MEAN:MIN:MAX (torch Generator, --seed) or a pre-tokenized JSONL corpus",
    )
    parser.add_argument("--precision", nargs="+", default=["bf16"], choices=["bf16", "fp32-master"])
    parser.add_argument(
        "--float8",
        nargs="+",
        default=["none"],
        choices=["none", "tensorwise", "rowwise"],
        help="FP8 linear layers (torchao), each a variant of every contender, ours and the peers alike; "
        "the ratio is to the best peer of the same setting",
    )
    parser.add_argument(
        "--float8-layers",
        default="auto",
        choices=["auto", "all"],
        help="which decoder linear layers convert (model/float8.py), the same for every contender",
    )
    parser.add_argument(
        "--compile-layers", action="store_true", help="ours: each decoder layer compiled on its own (regional)"
    )
    parser.add_argument(
        "--float8-eager",
        action="store_true",
        help="FP8 layers not compiled (torchao's scaling and casts as separate kernels: slower than bf16)",
    )
    parser.add_argument(
        "--checkpointing",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: each contender's fastest setting that fits, searched the same way for all of them: "
        "none, then --checkpoint-layers, then all layers",
    )
    parser.add_argument(
        "--checkpoint-layers",
        type=int,
        default=None,
        help="every contender: also try recomputing only the first N decoder layers (selective checkpointing)",
    )
    parser.add_argument(
        "--kernels",
        default="auto",
        choices=["auto", "liger", "none"],
        help="ours: fused RMSNorm/RoPE/SwiGLU (auto: Liger when installed)",
    )
    parser.add_argument(
        "--varlen-kernel",
        nargs="+",
        default=["auto"],
        choices=list(VARLEN_KERNELS),
        help="ours with the varlen backend: FlashAttention kernel(s) to run, each a contender "
        "(auto: the fastest installed)",
    )
    parser.add_argument("--offload", action="store_true", help="ours: checkpointed layer inputs in host memory")
    parser.add_argument("--mlp-tile", type=int, default=None, help="ours: MLP over this many slots at a time")
    parser.add_argument("--shape", type=json.loads, default={}, help="override the model shape, e.g. '{\"layers\": 2}'")
    parser.add_argument(
        "--config",
        default=None,
        metavar="DIR",
        help="a Hugging Face config directory or config.json for the model (instead of the Llama shape)",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per contender")
    parser.add_argument("--max-context", action="store_true", help="probe the longest trainable row instead")
    parser.add_argument("--start", type=int, default=4096, help="shortest row the probe tries")
    parser.add_argument("--limit", type=int, default=1 << 20, help="largest row the probe tries")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="profile one extra step per contender: device time per kernel class, top kernels (DIR/*.txt)",
    )
    parser.add_argument("--out", default="bench.json")
    args = parser.parse_args(argv)

    shape = {**SHAPE, **args.shape}
    if args.config is not None:
        from transformers import AutoConfig

        shape = {"config": args.config, "vocab_size": AutoConfig.from_pretrained(args.config).vocab_size}
    print(
        f"documents: {args.documents} ({lengths_summary(document_lengths(args.documents, max(args.rows), args.seed))})"
    )
    results = []
    for i, row in enumerate(args.rows):
        order = args.contenders if i % 2 == 0 else list(reversed(args.contenders))  # alternate the order
        for name in order:
            for spec in contender_specs(name, row, shape, args):
                if args.max_context:
                    best, tried = max_context({**spec, "checkpointing": True}, args.timeout, args.start, args.limit)
                    print(f"{label(spec)} ({spec['precision']}): longest trainable row {best}")
                    results.append({**spec, "max_context": best, "tried": tried})
                else:
                    settings = checkpoint_settings(args.checkpointing, args.checkpoint_layers)
                    result = run_best(spec, settings, args.timeout)
                    print(json.dumps(result), flush=True)
                    results.append(result)
                # each row kept as it comes: a stopped run loses none
                atomic_write(args.out, json.dumps(results, indent=1))
        if args.max_context:
            break
    if not args.max_context:
        print(table(results))
        print(host_work(results))
    return results


if __name__ == "__main__":
    main()
