"""``anchor-lightning diagnose``: measure BF16 RoPE's departure from relative positions (the paper's D).

    anchor-lightning diagnose --model /path/to/hf-checkpoint --data docs.jsonl --out diag/
    anchor-lightning diagnose --model recipes/llama-1b/64k-anchor.yaml --lengths 4096 8192 16384

``--model`` is a Hugging Face checkpoint directory, a ``.gguf`` file, a ``config.json``, or a recipe
YAML (random init from its ``model.config``). Writes ``rope_deviation.json`` (every number) and PNG plots
to ``--out`` and prints a summary. See docs/rope-precision.md for how to read them.
"""

from __future__ import annotations

import copy
import json

import torch

from anchor_lightning.commands.arguments import (
    VerbParser,
    add_corpus_arguments,
    add_lengths_argument,
    add_run_arguments,
    at_least,
    lengths_to_run,
)
from anchor_lightning.data.corpus import corpus_tokenizer, first_token_of, load_documents
from anchor_lightning.diagnostics.plots import plot_sweep
from anchor_lightning.diagnostics.sweep import PAPER_OFFSETS, SweepSettings, run_sweep, summary
from anchor_lightning.errors import UserError
from anchor_lightning.model.inference import load_inference_model
from anchor_lightning.paths import atomic_write, writable_directory


def default_lengths(trained: int | None, device: str) -> list[int]:
    """Up to the model's trained length in factors of 4 from 64 (4K at most on CPU)."""
    top = min(trained or 4096, 4096) if device == "cpu" else trained or 16384
    lengths = [64]
    while lengths[-1] * 4 <= top:
        lengths.append(lengths[-1] * 4)
    return lengths


def parser() -> VerbParser:
    p = VerbParser("diagnose", __doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--model", required=True, help="HF checkpoint directory, .gguf file, config.json, or recipe YAML")
    add_corpus_arguments(p)
    add_lengths_argument(p, 2, "64 to the model's max_position_embeddings in factors of 4; 4K at most on CPU")
    p.add_argument("--offsets", type=at_least(0), nargs="+", default=list(PAPER_OFFSETS))
    p.add_argument("--b", type=at_least(0), default=16, help="the fixed offset b")
    p.add_argument("--offset_length", type=at_least(2), default=4096, help="sequence length of the offset sweep")
    p.add_argument("--sequences", type=at_least(1), default=4, help="text windows averaged per point (paper: 50)")
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32", "float16"])
    add_run_arguments(p, "diagnostics", "random init seed (config or recipe models)")
    return p


def run(argv: list[str]) -> dict:
    args = parser().parse_args(argv)
    out = writable_directory(args.out, "--out")
    master, checkpoint = load_inference_model(
        args.model,
        rope_theta=args.rope_theta,
        allow_random=True,
        seed=args.seed,
        max_length=max(args.lengths or [0]) + max(args.offsets) + 1,
    )
    lengths = lengths_to_run(master.config, args.lengths, args.device, default_lengths)
    tokenizer = corpus_tokenizer(args.tokenizer, checkpoint)
    first_token = first_token_of(tokenizer, args.first_token)
    documents = load_documents(args.data, tokenizer)
    if max(int(d.max()) for d in documents if len(d)) >= master.config.vocab_size:
        raise UserError(
            f"the data's token ids exceed the model's vocabulary ({master.config.vocab_size})", field="--data"
        )
    settings = SweepSettings(
        lengths=tuple(lengths),
        offsets=tuple(args.offsets),
        b=args.b,
        offset_length=args.offset_length,
        sequences=args.sequences,
        dtypes=tuple(args.dtypes),
    )

    def model_for(dtype: str):
        return copy.deepcopy(master).to(device=args.device, dtype=getattr(torch, dtype))

    results = run_sweep(model_for, documents, first_token, settings, progress=not args.no_progress)
    results["model"] = {"source": args.model, "rope_parameters": dict(master.config.rope_parameters or {})}
    results["data"] = args.data
    atomic_write(out / "rope_deviation.json", json.dumps(results, indent=1))
    figures = plot_sweep(results, out)
    print(summary(results))
    print(f"wrote {out / 'rope_deviation.json'} and {', '.join(str(p) for p in figures)}")
    return results
