"""RULER's scoring (``scripts/eval/evaluate.py`` and ``scripts/eval/synthetic/constants.py``).

A prediction is stripped, every control character (``\\x00``-``\\x1f``) becomes a newline, and it is
stripped again. A sample scores the share of its references found in the prediction
(``string_match_all``: every task but QA) or 1 if any reference is found (``string_match_part``:
QA), case-insensitively, as substrings. A task's score is the mean over its samples x 100, which
RULER rounds to two decimals (:func:`task_score`); the length's score is the unweighted mean over
tasks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
    return _CONTROL.sub("\n", prediction.strip()).strip()


def sample_score(prediction: str, references: Sequence[str], metric: str) -> float:
    """One sample's score in [0, 1]: ``all`` = share of references found, ``part`` = any found."""
    text = postprocess(prediction).lower()
    found = [1.0 if r.lower() in text else 0.0 for r in references]
    if metric == "all":
        return sum(found) / len(found)
    if metric == "part":
        return max(found)
    raise ValueError(f"unknown RULER metric {metric!r}")


def task_score(scores: Sequence[float]) -> float:
    """RULER's task score: the mean x 100, rounded to two decimals."""
    return round(sum(scores) / len(scores) * 100, 2)
