"""Needle-in-a-haystack tasks in the spirit of RULER's NIAH, built offline from a corpus's own text.

A needle is a sentence ``The special magic number for <key> is <value>.`` inserted into real text at
a chosen depth; the prompt ends with ``The special magic number for <key> is`` and the model is scored
by the log-likelihood of K candidate values of the same form, so chance is 1/K and no generation or
answer parsing is needed.

* ``single``: one needle; the K-1 wrong candidates are numbers that appear nowhere in the prompt
  (finding the one number of the form in the context suffices: a test of reach);
* ``multikey``: K needles with different keys, one asked; the candidates are exactly the K values in
  the prompt, so copying a number seen in the context is not enough: the key must be bound to its value;
* ``multivalue``: the asked key inserted several times with different values (any of them counts) among
  K-1 needles of other keys; the candidates are one of the asked key's values and the K-1 other keys'.

Version 2 of the tasks (``TASKS_VERSION``): in version 1 the wrong candidates of every task were numbers
absent from the prompt, which a model that merely copies numbers from its context gets right.

Pure functions over token ids: the tokenizer only encodes the needle, question and candidate texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TASKS = ("single", "multikey", "multivalue")
TASKS_VERSION = 2
KEYS = (
    "amber basalt cedar dahlia ember fjord garnet harbor indigo juniper kestrel lagoon meadow nectar onyx "
    "pepper quartz raven saffron timber umber velvet willow yarrow zephyr almond bramble copper dune falcon"
).split()


@dataclass(frozen=True)
class Trial:
    task: str
    length: int  # prompt tokens
    depth: float  # 0 (start) .. 1 (end) of the haystack where the asked needle sits
    prompt: list[int]
    candidates: list[list[int]]
    answers: frozenset[int]  # indices of the candidates that count as right


def _value(rng: np.random.Generator, taken: set[int]) -> int:
    while True:
        value = int(rng.integers(1_000_000, 10_000_000))  # seven digits: candidates of one form
        if value not in taken:
            taken.add(value)
            return value


def build_trial(
    task: str,
    haystack: np.ndarray,
    length: int,
    depth: float,
    encode,
    first_token: int,
    candidates: int,
    rng: np.random.Generator,
    needles: int = 4,
) -> Trial:
    """One trial of ``length`` prompt tokens: the first token, text with needles, then the question."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
    if task != "single" and candidates > len(KEYS):
        raise ValueError(f"{task} needs a key per candidate: at most {len(KEYS)} candidates")
    keys = list(rng.choice(KEYS, size=1 if task == "single" else candidates, replace=False))
    taken: set[int] = set()
    asked = keys[0]
    inserted = [(key, _value(rng, taken)) for key in keys]
    if task == "multivalue":
        inserted += [(asked, _value(rng, taken)) for _ in range(needles - 1)]
    right = [v for k, v in inserted if k == asked]
    question = encode(f"\nWhat is the special magic number for {asked}? The special magic number for {asked} is")
    needle_ids = [encode(f" The special magic number for {k} is {v}.") for k, v in inserted]
    text_len = length - 1 - len(question) - sum(len(n) for n in needle_ids)
    if text_len < 1:
        need = 1 + len(question) + sum(len(n) for n in needle_ids)
        raise ValueError(
            f"a {length}-token prompt cannot hold the {task} needles and the question ({need} tokens with "
            f"{candidates} candidates): give longer lengths or fewer candidates"
        )
    start = int(rng.integers(0, max(1, len(haystack) - text_len)))
    text = (
        np.resize(haystack[start:], text_len)
        if len(haystack) - start < text_len
        else haystack[start : start + text_len]
    )
    # the asked needle at the depth; the others at random places
    spots = [int(round(depth * text_len))] + [int(rng.integers(0, text_len + 1)) for _ in needle_ids[1:]]
    order = np.argsort(spots, kind="stable")
    pieces, cursor = [[first_token]], 0
    for i in order:
        pieces.append(text[cursor : spots[i]].tolist())
        pieces.append(needle_ids[i])
        cursor = spots[i]
    pieces += [text[cursor:].tolist(), question]
    prompt = [t for piece in pieces for t in piece]
    if task == "single":
        wrong = [_value(rng, taken) for _ in range(candidates - 1)]
    else:  # the other keys' values: every candidate is a number of the prompt
        wrong = [v for k, v in inserted if k != asked]
    values = [right[0]] + wrong
    rng.shuffle(values)
    answers = frozenset(i for i, v in enumerate(values) if v in right)
    return Trial(task, len(prompt), depth, prompt, [encode(f" {v}.") for v in values], answers)


def build_trials(
    haystack: np.ndarray,
    encode,
    first_token: int,
    tasks: Sequence[str] = TASKS,
    lengths: Sequence[int] = (4096,),
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    trials: int = 5,
    candidates: int = 10,
    seed: int = 0,
) -> list[Trial]:
    """``trials`` per (task, length, depth), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return [
        build_trial(task, haystack, length, depth, encode, first_token, candidates, rng)
        for task in tasks
        for length in lengths
        for depth in depths
        for _ in range(trials)
    ]
