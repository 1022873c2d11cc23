"""Running trials, summarising accuracy by (task, depth, length), and the depth x length heat map."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from anchor_lightning.eval.niah import Trial
from anchor_lightning.eval.scoring import Scorer


def run_trials(scorer: Scorer, trials: Sequence[Trial], progress: bool = True) -> list[bool]:
    """Whether each trial's best-scoring candidate is a right answer."""
    hits = []
    for trial in tqdm(trials, desc="needles", disable=not progress, unit="trial"):
        scores = scorer.loglikelihoods(trial.prompt, trial.candidates)
        hits.append(int(np.argmax(scores)) in trial.answers)
    return hits


def summarise(trials: Sequence[Trial], hits: Sequence[bool]) -> dict:
    """Accuracy per task overall and on the depth x length grid, with chance and a standard error."""
    out: dict = {}
    for task in sorted({t.task for t in trials}):
        picked = [(t, h) for t, h in zip(trials, hits) if t.task == task]
        depths = sorted({t.depth for t, _ in picked})
        lengths = sorted({t.length for t, _ in picked})
        grid = [[float(np.mean([h for t, h in picked if t.depth == d and t.length == n])) for n in lengths] for d in depths]
        accuracy = float(np.mean([h for _, h in picked]))
        chance = float(np.mean([len(t.answers) / len(t.candidates) for t, _ in picked]))
        out[task] = {
            "accuracy": accuracy,
            "trials": len(picked),
            "chance": chance,
            "stderr_at_chance": math.sqrt(chance * (1 - chance) / len(picked)),
            "depths": depths,
            "lengths": lengths,
            "grid": grid,  # rows: depths, columns: lengths
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
        ax.set_xticks(range(len(result["lengths"])), [f"{n // 1024}K" if n >= 1024 else str(n) for n in result["lengths"]])
        ax.set_yticks(range(len(result["depths"])), [f"{d:.0%}" for d in result["depths"]])
        ax.set(xlabel="context length", ylabel="needle depth", title=f"{task}: {result['accuracy']:.0%} (chance {result['chance']:.0%})")
        for (i, j), value in np.ndenumerate(np.asarray(result["grid"])):
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="accuracy")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
