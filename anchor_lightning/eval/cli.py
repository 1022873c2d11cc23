"""``python -m anchor_lightning evaluate``: long-context evaluation of a Hugging Face checkpoint.

    python -m anchor_lightning evaluate --model exported/ --data docs.jsonl --lengths 4096 16384 65536 --out eval/

Needle retrieval (single needle, multi-key, multi-value) built from the corpus's own text at each
context length and depth, scored by log-likelihood over ``--candidates`` answers (chance 1/K), and
perplexity by position bucket on the corpus's long documents. Writes ``long_context.json`` and
``niah_heatmap.png`` to ``--out`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from anchor_lightning.data.corpus import add_corpus_arguments, load_corpus
from anchor_lightning.errors import UserError
from anchor_lightning.eval.niah import TASKS, build_trials
from anchor_lightning.eval.report import heat_map, run_trials, summarise
from anchor_lightning.eval.scoring import HFScorer, Scorer, perplexity_by_position


def evaluate(
    scorer: Scorer,
    documents: list[np.ndarray],
    encode,
    first_token: int,
    tasks=TASKS,
    lengths=(4096,),
    depths=(0.0, 0.25, 0.5, 0.75, 1.0),
    trials: int = 5,
    candidates: int = 10,
    ppl_documents: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Needle accuracy (and, when the scorer can, perplexity by position) as one dict."""
    haystack = np.concatenate(documents)
    built = build_trials(haystack, encode, first_token, tasks, lengths, depths, trials, candidates, seed)
    results: dict = {"niah": summarise(built, run_trials(scorer, built, progress))}
    if hasattr(scorer, "token_losses") and ppl_documents:
        longest = sorted(documents, key=len, reverse=True)[:ppl_documents]
        losses = [scorer.token_losses([first_token, *d[: max(lengths)].tolist()]) for d in longest]
        results["perplexity_by_position"] = perplexity_by_position(losses)
    return results


def summary_lines(results: dict) -> list[str]:
    lines = []
    for task, r in results["niah"].items():
        lines.append(
            f"{task:>10}: {r['accuracy']:.1%} over {r['trials']} trials (chance {r['chance']:.0%} +- {r['stderr_at_chance']:.1%})"
        )
    for bucket in results.get("perplexity_by_position", []):
        lines.append(f"  ppl tokens {bucket['start']:>6}-{bucket['end']:<6} {bucket['ppl']:8.2f} ({bucket['tokens']} tokens)")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m anchor_lightning evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face checkpoint directory (e.g. from `export`)")
    add_corpus_arguments(parser)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--trials", type=int, default=5, help="trials per (task, length, depth)")
    parser.add_argument("--candidates", type=int, default=10, help="answers to choose from (chance = 1 / this)")
    parser.add_argument("--ppl-documents", type=int, default=4, help="long documents for perplexity by position")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="eval")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM

    path = Path(args.model)
    if not (path / "config.json").is_file():
        raise UserError("not a Hugging Face checkpoint directory (no config.json)", file=args.model)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype), attn_implementation="sdpa")
    model = model.to(args.device).eval()
    tokenizer, first_token, documents = load_corpus(args, path)

    def encode(text: str) -> list[int]:
        return tokenizer.encode_batch([text])[0]

    results = evaluate(
        HFScorer(model), documents, encode, first_token, args.tasks, args.lengths, args.depths, args.trials,
        args.candidates, args.ppl_documents, args.seed, progress=not args.no_progress,
    )
    results["model"], results["data"] = args.model, args.data
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "long_context.json").write_text(json.dumps(results, indent=1))
    figure = heat_map(results["niah"], out / "niah_heatmap.png")
    print("\n".join(summary_lines(results)))
    print(f"wrote {out / 'long_context.json'} and {figure}")
    return results
