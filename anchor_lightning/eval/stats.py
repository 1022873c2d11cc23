"""Uncertainty for the evaluation's numbers: Wilson intervals for accuracies, bootstrap intervals for
token-weighted means over documents, and an exact paired test between two models on the same trials."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(hits: float, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default); (0, 1) for no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = hits / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ratio_interval(
    sums: np.ndarray, counts: np.ndarray, resamples: int, rng: np.random.Generator, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of sum(sums) / sum(counts) when whole documents (pairs of sum and count) are
    resampled with replacement. One document gives a zero-width interval."""
    sums, counts = np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    point = sums.sum() / counts.sum()
    if len(sums) < 2 or resamples < 1:
        return point, point
    picks = rng.integers(0, len(sums), size=(resamples, len(sums)))
    ratios = sums[picks].sum(1) / counts[picks].sum(1)
    tail = (1 - level) / 2
    return float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1 - tail))


def paired_comparison(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Two models on the same trials: the accuracy difference a - b with its 95% interval (Wald, for
    paired proportions: the variance comes from the discordant trials only), and McNemar's exact
    two-sided p-value over the discordant trials (those one model got right and the other wrong):
    :func:`paired_difference` on 0/1 scores, which is exactly that."""
    d = paired_difference([float(x) for x in a], [float(y) for y in b])
    return {
        "difference": d["difference"],
        "difference_low": d["difference_low"],
        "difference_high": d["difference_high"],
        "only_a": d["higher_a"],
        "only_b": d["higher_b"],
        "p_value": d["p_value"],
    }


def mean_interval(scores: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """The mean of scores in [0, 1] with its 95% Wilson interval over ``len(scores)`` samples (for
    0/1 scores the binomial one; for partial credit conservative, since a score in [0, 1] varies no
    more than a 0/1 one of the same mean)."""
    n = len(scores)
    mean = float(sum(scores) / n) if n else 0.0
    low, high = wilson_interval(mean * n, n, z) if n else (0.0, 1.0)
    return mean, low, high


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """Two models' scores in [0, 1] on the same samples: the mean difference a - b with a 95% interval
    (normal, from the paired differences' variance; for 0/1 scores the same as
    :func:`paired_comparison`'s), how many samples each scored higher on, and the exact two-sided sign
    test over those (McNemar's for 0/1 scores)."""
    if len(a) != len(b):
        raise ValueError("paired trials must be the same trials")
    n = len(a)
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean = float(d.mean()) if n else 0.0
    half = Z95 * math.sqrt(float(np.mean((d - mean) ** 2)) / n) if n else 1.0
    higher_a, higher_b = int((d > 0).sum()), int((d < 0).sum())
    m, k = higher_a + higher_b, min(higher_a, higher_b)
    p = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m) if m else 1.0
    return {
        "difference": mean,
        "difference_low": max(-1.0, mean - half),
        "difference_high": min(1.0, mean + half),
        "samples": n,
        "higher_a": higher_a,
        "higher_b": higher_b,
        "p_value": p,
    }


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (``p`` in (0.5, 1)): the t density integrated by Simpson's rule and
    inverted by bisection, to about 1e-6 (no SciPy needed for the few small-sample intervals here)."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError("t_quantile needs 0.5 < p < 1 and df >= 1")
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(t: float, steps: int = 4000) -> float:  # 0.5 + the density's integral from 0 to t
        h = t / steps
        f = [norm * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def mean_t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """The mean of a few independent values (e.g. one difference per training) with its t interval on
    n - 1 degrees of freedom; (mean, -inf, inf) for a single value."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, -math.inf, math.inf
    half = t_quantile(0.5 + level / 2, n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half
