"""``python -m anchor_lightning evaluate``: long-context evaluation of a Hugging Face checkpoint.

    python -m anchor_lightning evaluate --model exported/ --data docs.jsonl --lengths 4096 16384 65536 --out eval/
    python -m anchor_lightning evaluate --model model.gguf --rope-theta 2.2e6 --data needles.jsonl \\
        --ppl-data long.jsonl --short-data wiki.jsonl --lengths 4096 32768 --trials 20

Needle retrieval (single needle, multi-key, multi-value) built from the corpus's own text at each
context length and depth, scored by log-likelihood over ``--candidates`` answers (chance 1/K), with a
95% Wilson interval per task and length; perplexity by position bucket on the longest documents of
``--ppl-data`` (default ``--data``), and optionally short-context perplexity on ``--short-data``, each
with a 95% interval over documents. Writes ``long_context.json`` and ``niah_heatmap.png`` to ``--out``
and prints a summary. ``--model`` is a Hugging Face directory or a ``.gguf`` file.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from anchor_lightning.checkpoint.gguf import local_checkpoint
from anchor_lightning.data.corpus import add_corpus_arguments, load_corpus, load_documents
from anchor_lightning.errors import UserError
from anchor_lightning.eval.niah import TASKS, TASKS_VERSION, build_trials
from anchor_lightning.eval.report import heat_map, run_trials, summarise
from anchor_lightning.eval.scoring import HFScorer, Scorer, perplexity, perplexity_by_position
from anchor_lightning.model.build import configure, load_config


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
    ppl_corpus: list[np.ndarray] | None = None,
    short_corpus: list[np.ndarray] | None = None,
    short_length: int = 2048,
) -> dict:
    """Needle accuracy and, when the scorer can, perplexity by position (on the longest
    ``ppl_documents`` of ``ppl_corpus``, default ``documents``, cut at the longest length) and
    short-context perplexity (``short_corpus``, each document's first ``short_length`` tokens)."""
    haystack = np.concatenate(documents)
    try:
        built = build_trials(haystack, encode, first_token, tasks, lengths, depths, trials, candidates, seed)
    except ValueError as err:
        raise UserError(str(err), field="--lengths") from None
    per_trial: list[float] = []
    results: dict = {"niah": summarise(built, run_trials(scorer, built, progress, per_trial)), "niah_version": TASKS_VERSION}
    seconds = {f"niah_{n}": round(sum(s for t, s in zip(built, per_trial) if t.length == n), 2) for n in lengths}
    if hasattr(scorer, "token_losses") and ppl_documents:
        start = time.perf_counter()
        longest = sorted(ppl_corpus or documents, key=len, reverse=True)[:ppl_documents]
        losses = [scorer.token_losses([first_token, *d[: max(lengths) - 1].tolist()]) for d in longest]
        results["perplexity_by_position"] = perplexity_by_position(losses)
        seconds["perplexity_by_position"] = round(time.perf_counter() - start, 2)
    if hasattr(scorer, "token_losses") and short_corpus:
        start = time.perf_counter()
        results["short_perplexity"] = perplexity(scorer, short_corpus, first_token, short_length)
        seconds["short_perplexity"] = round(time.perf_counter() - start, 2)
    results["seconds"] = seconds
    return results


def summary_lines(results: dict) -> list[str]:
    lines = []
    for task, r in results["niah"].items():
        lines.append(
            f"{task:>10}: {r['accuracy']:.1%} [{r['low']:.1%}, {r['high']:.1%}] over {r['trials']} trials "
            f"(chance {r['chance']:.0%} +- {r['stderr_at_chance']:.1%})"
        )
        for n, cell in r["by_length"].items():
            lines.append(f"{'':>12}{int(n):>7} tokens: {cell['accuracy']:.1%} [{cell['low']:.1%}, {cell['high']:.1%}] ({cell['trials']})")
    for bucket in results.get("perplexity_by_position", []):
        lines.append(
            f"  ppl tokens {bucket['start']:>6}-{bucket['end']:<6} {bucket['ppl']:8.2f} "
            f"[{bucket['ppl_low']:.2f}, {bucket['ppl_high']:.2f}] ({bucket['tokens']} tokens, {bucket['documents']} documents)"
        )
    short = results.get("short_perplexity")
    if short:
        lines.append(
            f"  short-context ppl (first {short['length']} tokens of {short['documents']} documents): {short['ppl']:.2f} "
            f"[{short['ppl_low']:.2f}, {short['ppl_high']:.2f}]"
        )
    if "seconds" in results:
        lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in results["seconds"].items()))
    return lines


def default_lengths(trained: int | None, device: str) -> list[int]:
    """A quarter, half and all of the length the model was trained on (4K on CPU at most: long
    contexts take minutes per trial there)."""
    top = trained or 4096
    if device == "cpu":
        top = min(top, 4096)
    return [top // 4, top // 2, top]


def load_model(source: str, rope_theta: float | None, dtype: str, device: str):
    """(model, its Hugging Face directory); ``rope_theta`` replaces the checkpoint's RoPE base."""
    from transformers import AutoModelForCausalLM

    path = Path(local_checkpoint(source, field="--model"))
    if not (path / "config.json").is_file():
        raise UserError("not a Hugging Face checkpoint directory (no config.json) nor a .gguf file", file=source)
    config = load_config(str(path), None)
    config.use_cache = True
    if rope_theta is not None:
        config = configure(config, 0, rope_theta)
        config.use_cache = True
    model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    return model.to(device).eval(), path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m anchor_lightning evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face checkpoint directory (e.g. from `export`) or a .gguf file")
    add_corpus_arguments(parser)
    parser.add_argument("--ppl-data", default=None, help="corpus for perplexity by position (default: --data)")
    parser.add_argument("--short-data", default=None, help="corpus for short-context perplexity (default: none)")
    parser.add_argument("--short-length", type=int, default=2048, help="tokens per document of the short-context perplexity")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="context lengths (default: 1/4, 1/2 and all of the model's max_position_embeddings; 4K at most on CPU)")
    parser.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--trials", type=int, default=5, help="trials per (task, length, depth)")
    parser.add_argument("--candidates", type=int, default=10, help="answers to choose from (chance = 1 / this)")
    parser.add_argument("--ppl-documents", type=int, default=4, help="long documents for perplexity by position")
    parser.add_argument("--rope-theta", type=float, default=None, help="replace the checkpoint's RoPE base")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="eval")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    model, path = load_model(args.model, args.rope_theta, args.dtype, args.device)
    trained = getattr(model.config, "max_position_embeddings", None)
    lengths = args.lengths or default_lengths(trained, torch.device(args.device).type)
    if trained and max(lengths) > trained:
        warnings.warn(f"lengths up to {max(lengths)} exceed the model's max_position_embeddings ({trained})", stacklevel=1)
    tokenizer, first_token, documents = load_corpus(args, path)

    def encode(text: str) -> list[int]:
        return tokenizer.encode_batch([text])[0]

    results = evaluate(
        HFScorer(model), documents, encode, first_token, args.tasks, lengths, args.depths, args.trials,
        args.candidates, args.ppl_documents, args.seed, progress=not args.no_progress,
        ppl_corpus=load_documents(args.ppl_data, tokenizer) if args.ppl_data else None,
        short_corpus=load_documents(args.short_data, tokenizer) if args.short_data else None,
        short_length=args.short_length,
    )
    results.update(model=args.model, data=args.data, ppl_data=args.ppl_data or args.data, short_data=args.short_data,
                   rope_parameters=dict(model.config.rope_parameters or {}), first_token=first_token)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "long_context.json").write_text(json.dumps(results, indent=1))
    figure = heat_map(results["niah"], out / "niah_heatmap.png")
    print("\n".join(summary_lines(results)))
    print(f"wrote {out / 'long_context.json'} and {figure}")
    return results
