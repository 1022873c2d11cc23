"""Running trials, summarising accuracy by (task, depth, length), and the depth x length heat map."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anchor_lightning.eval.niah import Trial
from anchor_lightning.eval.scoring import Scorer
from anchor_lightning.eval.stats import wilson_interval
from anchor_lightning.messages import Count
from anchor_lightning.paths import write_figure


def chose_right(scores: Sequence[float], answers: frozenset[int]) -> bool:
    """Whether a right candidate scores strictly above every wrong one: a tie is a miss, so a model that
    cannot tell the candidates apart (all scores equal) is never credited with the first of them."""
    right = max(s for i, s in enumerate(scores) if i in answers)
    return all(right > s for i, s in enumerate(scores) if i not in answers)


def run_trials(
    scorer: Scorer,
    trials: Sequence[Trial],
    progress: bool = True,
    seconds: list | None = None,
    batch_tokens: int = 131072,
) -> list[bool]:
    """Whether each trial's best-scoring candidate is a right answer (each trial's share of the wall
    time appended to ``seconds`` when given). A scorer with ``batch_loglikelihoods`` gets consecutive
    trials of one length together, about ``batch_tokens`` prompt tokens at a time."""
    hits: list[bool] = []
    batch_scores = getattr(scorer, "batch_loglikelihoods", None)  # several prompts of one length at once
    batched = batch_scores is not None
    with Count(len(trials), "needles", "trial", bar=progress) as bar:
        start_index = 0
        while start_index < len(trials):
            first = trials[start_index]
            size = max(1, batch_tokens // max(1, first.length)) if batched else 1
            group = [first]
            for trial in trials[start_index + 1 : start_index + size]:
                if trial.length != first.length or len(trial.candidates) != len(first.candidates):
                    break
                group.append(trial)
            began = time.perf_counter()
            if batch_scores is not None:
                all_scores = batch_scores([t.prompt for t in group], [t.candidates for t in group])
            else:
                all_scores = [scorer.loglikelihoods(first.prompt, first.candidates)]
            hits += [chose_right(scores, t.answers) for t, scores in zip(group, all_scores)]
            if seconds is not None:
                seconds += [(time.perf_counter() - began) / len(group)] * len(group)
            start_index += len(group)
            bar.update(len(group))
    return hits


def summarise(trials: Sequence[Trial], hits: Sequence[bool]) -> dict:
    """Accuracy per task overall, per context length (with a 95% Wilson interval) and on the
    depth x length grid, with chance, a standard error at chance, and every trial's outcome in the
    trials' order (``hits``, for paired comparisons of models run on the same trials)."""
    out: dict = {}
    for task in sorted({t.task for t in trials}):
        picked = [(t, h) for t, h in zip(trials, hits) if t.task == task]
        depths = sorted({t.depth for t, _ in picked})
        lengths = sorted({t.length for t, _ in picked})
        grid = [
            [float(np.mean([h for t, h in picked if t.depth == d and t.length == n])) for n in lengths] for d in depths
        ]
        right = sum(bool(h) for _, h in picked)
        chance = float(np.mean([len(t.answers) / len(t.candidates) for t, _ in picked]))
        by_length = {}
        for n in lengths:
            at = [bool(h) for t, h in picked if t.length == n]
            low, high = wilson_interval(sum(at), len(at))
            by_length[str(n)] = {"accuracy": sum(at) / len(at), "trials": len(at), "low": low, "high": high}
        low, high = wilson_interval(right, len(picked))
        out[task] = {
            "accuracy": right / len(picked),
            "trials": len(picked),
            "low": low,
            "high": high,
            "chance": chance,
            "stderr_at_chance": math.sqrt(chance * (1 - chance) / len(picked)),
            "by_length": by_length,
            "depths": depths,
            "lengths": lengths,
            "grid": grid,  # rows: depths, columns: lengths
            "hits": [bool(h) for _, h in picked],
            "trial_lengths": [t.length for t, _ in picked],
        }
    return out


def heat_map(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        result = summary[task]
        image = ax.imshow(result["grid"], vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(
            range(len(result["lengths"])), [f"{n // 1024}K" if n >= 1024 else str(n) for n in result["lengths"]]
        )
        ax.set_yticks(range(len(result["depths"])), [f"{d:.0%}" for d in result["depths"]])
        ax.set(
            xlabel="context length",
            ylabel="needle depth",
            title=f"{task}: {result['accuracy']:.0%} (chance {result['chance']:.0%})",
        )
        for (i, j), value in np.ndenumerate(np.asarray(result["grid"])):
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="accuracy")
    write_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
