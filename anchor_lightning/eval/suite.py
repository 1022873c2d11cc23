"""The long-context evaluation suite over any :class:`~anchor_lightning.eval.scoring.Scorer`: needle
retrieval (accuracy per task and length with 95% Wilson intervals, every trial's outcome kept),
perplexity by position and short-context perplexity (95% intervals over documents), with the seconds
each part took. The ``evaluate`` verb (``anchor_lightning/commands/evaluate.py``) runs it on a
checkpoint; :class:`~anchor_lightning.callbacks.long_context.LongContextEval` during training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from anchor_lightning.errors import UserError
from anchor_lightning.eval.niah import TASKS, TASKS_VERSION, build_trials
from anchor_lightning.eval.report import run_trials, summarise
from anchor_lightning.eval.scoring import Scorer, perplexity, perplexity_by_position


@dataclass
class NeedleSettings:
    """What the needle suite measures: the tasks at each length and depth, trials per cell and
    candidates per trial (chance is 1 / candidates), the documents and lengths of the perplexity parts,
    the seed of the trials, and how many tokens the scorer takes a batch."""

    tasks: tuple[str, ...] = TASKS
    lengths: tuple[int, ...] = (4096,)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials: int = 5
    candidates: int = 10
    ppl_documents: int = 4
    short_length: int = 2048
    seed: int = 0
    batch_tokens: int = 131072
    progress: bool = True


@dataclass
class Corpora:
    """The token-id documents the suite reads: the haystack of the needle trials, and (default: the
    haystack's documents) those of perplexity by position and of short-context perplexity (none: no
    short-context part)."""

    haystack: list[np.ndarray]
    ppl: list[np.ndarray] | None = None
    short: list[np.ndarray] | None = field(default=None)


def evaluate(scorer: Scorer, corpora: Corpora, encode, first_token: int, settings: NeedleSettings) -> dict:
    """Needle accuracy and, when the scorer can, perplexity by position (on the longest
    ``settings.ppl_documents`` of ``corpora.ppl``, cut at the longest length) and short-context
    perplexity (``corpora.short``, each document's first ``settings.short_length`` tokens)."""
    documents, ppl_corpus, short_corpus = corpora.haystack, corpora.ppl, corpora.short
    tasks, lengths, depths = settings.tasks, settings.lengths, settings.depths
    trials, candidates, ppl_documents = settings.trials, settings.candidates, settings.ppl_documents
    seed, progress, short_length, batch_tokens = (
        settings.seed,
        settings.progress,
        settings.short_length,
        settings.batch_tokens,
    )
    haystack = np.concatenate(documents)
    try:
        built = build_trials(haystack, encode, first_token, tasks, lengths, depths, trials, candidates, seed)
    except ValueError as err:
        raise UserError(str(err), field="--lengths") from None
    per_trial: list[float] = []
    results: dict = {
        "niah": summarise(built, run_trials(scorer, built, progress, per_trial, batch_tokens)),
        "niah_version": TASKS_VERSION,
    }
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
            lines.append(
                f"{'':>12}{int(n):>7} tokens: {cell['accuracy']:.1%} [{cell['low']:.1%}, {cell['high']:.1%}] ({cell['trials']})"
            )
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
