"""RULER's sample generators, equal byte for byte to NVIDIA/RULER's ``scripts/data/synthetic/*.py``.

For one task and one length, RULER seeds Python's ``random`` (and NumPy's) with 42, searches for the
largest haystack whose prompt, counted with the model's tokenizer, leaves room for the task's
generation budget (``tokens_to_generate``) within the length, then draws each sample in turn. Every
random draw of that search and of each sample feeds the next, so matching the reference means making
the same draws in the same order: these generators do (``random.Random(seed)`` and
``numpy.random.RandomState(seed)`` stand in for the seeded global generators), and
``tests/eval/test_ruler_exact.py`` holds them to the reference's own output for every task. The
reference's quirks are kept on purpose and marked ``(as RULER)``; ``docs/ruler.md`` lists them.

``count(text)`` is the number of tokens RULER counts: ``len(tokenizer.tokenize(text))``, no BOS.
"""

from __future__ import annotations

import json
import math
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anchor_lightning.errors import UserError
from anchor_lightning.eval.ruler import resources
from anchor_lightning.eval.ruler.keys import SortedPairs
from anchor_lightning.eval.ruler.tasks import FAMILIES, TaskSpec

Counter = Callable[[str], int]
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
DEPTHS = [int(d) for d in np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int)]
MAX_RETRIES = 1_000  # RULER retries a too-long sample forever; we stop and say so


@dataclass
class Sample:
    index: int
    input: str
    outputs: list[str]
    length: int  # RULER's count: prompt tokens (no BOS) + the generation budget

    def as_json(self) -> dict:
        return {"index": self.index, "input": self.input, "outputs": self.outputs, "length": self.length}


def _fit(make, used: int, incremental: int, measure, limit: int) -> tuple[str, list[str], int]:
    """RULER's per-sample loop: draw at ``used`` and measure the draw; if it fails (over ``limit``, or a
    sample larger than its population), shrink by ``incremental`` while larger than it, and draw again.
    Returns the text, the answers and the measured length."""
    for _ in range(MAX_RETRIES):
        try:
            text, answer = make(used)
            size = measure(text)
            if size <= limit:
                return text, answer, size
        except (ValueError, IndexError):  # (as RULER) a bare except: what random.sample or a chain raises
            pass
        if used > incremental:
            used -= incremental
    raise UserError(f"no RULER sample fits after {MAX_RETRIES} draws: the length is too short for this task")


def _grow(total_at, incremental: int, extra: int, length: int, cap: int | None = None) -> int:
    """RULER 2024's calibration: grow the haystack by ``incremental`` while ``total_at(n) + extra`` stays
    under ``length`` (each step draws); one step back once over, ``cap`` at most. (As RULER) an exact
    fit leaves the loop one step further on."""
    num, total = incremental, 0
    while total + extra < length:
        total = total_at(num)
        if total + extra > length:
            return num - incremental
        num += incremental
        if cap is not None and num > cap:
            return cap
    return num


def _draw(make_at, num_samples: int, num: int, incremental: int, measure, limit: int) -> list[Sample]:
    """RULER's samples in turn: ``make_at(index)`` is the draw of sample ``index`` at a haystack size."""
    out = []
    for index in range(num_samples):
        text, answer, size = _fit(make_at(index), num, incremental, measure, limit)
        out.append(Sample(index, text, answer, size))
    return out


def _calibrate(count, text_at, incremental: int, extra: int, length: int, probe: int = 0, widen=None) -> int:
    """RULER 2026's calibration: tokens per haystack item estimated from a draw at ``probe`` (default
    ``incremental``), then a binary search up to ``widen(length, per_item)`` (default 3x the estimate)
    for the largest size whose draw, plus ``extra``, fits in ``length``."""
    probe = probe or incremental
    per_item = count(text_at(probe)) / probe
    upper = widen(length, per_item) if widen else int((length / per_item) * 3)
    found = _largest_fitting(lambda n: count(text_at(n)) + extra, incremental, max(upper, incremental * 2), length)
    return found if found is not None else incremental


def _largest_fitting(measure, lower: int, upper: int, limit: int) -> int | None:
    """RULER 2026's calibration: binary search for the largest haystack size in [lower, upper] whose
    draw measures at most ``limit`` (each probe draws, as the reference's does)."""
    best = None
    while lower <= upper:
        mid = (lower + upper) // 2
        if measure(mid) <= limit:
            best, lower = mid, mid + 1
        else:
            upper = mid - 1
    return best


def zeta(s: float) -> float:
    """Riemann's zeta for s > 1 (scipy.special.zeta's value; exactly pi^2/6 at RULER's s = 2)."""
    if s == 2.0:
        return math.pi**2 / 6
    n = 64  # Euler-Maclaurin: the first n terms, the tail integral and three correction terms
    head = math.fsum(k**-s for k in range(1, n))
    return (
        head + n ** (1 - s) / (s - 1) + n**-s / 2 + s * n ** (-s - 1) / 12 - s * (s + 1) * (s + 2) * n ** (-s - 3) / 720
    )


# ---------------------------------------------------------------- needle in a haystack (niah.py)
class _Niah:
    def __init__(self, spec: TaskSpec, count: Counter, length: int, seed: int) -> None:
        a = spec.args
        self.spec, self.count, self.length, self.seed = spec, count, length, seed
        self.rng = random.Random(seed)
        self.kind = "repeat" if a["type_haystack"] == "noise" else a["type_haystack"]  # 2026 renamed it
        self.k_type, self.v_type = a["type_needle_k"], a["type_needle_v"]
        self.num_k, self.num_v, self.num_q = (
            max(a["num_needle_k"], a["num_needle_q"]),
            a["num_needle_v"],
            a["num_needle_q"],
        )
        if self.kind not in ("essay", "repeat", "needle"):
            raise ValueError(f"unknown haystack {self.kind!r}")
        self.words = None
        if "words" in (self.k_type, self.v_type):
            self.words = SortedPairs(resources.word_list("adjectivelist"), resources.word_list("nounlist"))

    def random_value(self, kind: str) -> str:
        if kind == "numbers":
            return str(self.rng.randint(10**6, 10**7 - 1))
        if kind == "words":
            assert self.words is not None  # built for the "words" kind
            return self.rng.choice(self.words)
        if kind == "uuids":
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        raise ValueError(f"unknown needle type {kind!r}")

    def essay_context(self, num_haystack: int, needles: list[str]) -> str:
        words = resources.essay_words()
        if num_haystack > len(words):
            raise UserError(
                f"a {self.length}-token essay haystack needs more than the {len(words):,} words of the offline "
                "essays (enough for about 128K tokens): give shorter --lengths",
                field="--lengths",
            )
        sentences = resources.split_sentences(" ".join(words[:num_haystack]).strip())
        depths = self.rng.sample(DEPTHS, len(needles))
        cuts = [0, *sorted(int(len(sentences) * (d / 100)) for d in depths), len(sentences)]
        pieces = []
        for i in range(1, len(cuts)):
            pieces.append(" ".join(sentences[cuts[i - 1] : cuts[i]]))
            if i - 1 < len(needles):
                pieces.append(needles[i - 1])
        return " ".join(pieces)

    def make(self, num_haystack: int) -> tuple[str, list[str]]:
        keys, values, needles = [], [], []
        for _ in range(self.num_k):
            keys.append(self.random_value(self.k_type))
            value = []
            for _ in range(self.num_v):
                value.append(self.random_value(self.v_type))
                needles.append(NEEDLE.format(type_needle_v=self.v_type, key=keys[-1], value=value[-1]))
            values.append(value)
        random.Random(self.seed).shuffle(needles)
        if self.kind == "essay":
            context = self.essay_context(num_haystack, needles)
        else:
            if self.kind == "repeat":
                sentences = [NOISE] * num_haystack
            else:  # needle: distractor needles with random keys and values (key drawn first)
                sentences = []
                for _ in range(num_haystack):
                    key = self.random_value(self.k_type)
                    sentences.append(
                        NEEDLE.format(type_needle_v=self.v_type, key=key, value=self.random_value(self.v_type))
                    )
            for index, needle in zip(sorted(self.rng.sample(range(num_haystack), len(needles)), reverse=True), needles):
                sentences.insert(index, needle)
            context = "\n".join(sentences)
        indices = self.rng.sample(range(self.num_k), self.num_q)
        queries = [keys[i] for i in indices]
        answers = [a for i in indices for a in values[i]]
        query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
        template, type_v = self.spec.template, self.v_type
        if self.num_q * self.num_v == 1:  # (as RULER) plain replaces over the whole template
            for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
                template = template.replace(old, new)
            type_v = type_v[:-1]
        return template.format(type_needle_v=type_v, context=context, query=query), answers

    def samples(self, num_samples: int) -> list[Sample]:
        budget, length = self.spec.tokens_to_generate, self.length
        incremental = 500 if self.kind == "essay" else (25 if length >= 4096 else 5)
        if self.spec.version == "2026":
            num = _calibrate(self.count, lambda n: self.make(n)[0], incremental, budget, length)
        else:
            num = _grow(self.total, incremental, budget, length)
        return _draw(lambda i: self.make, num_samples, num, incremental, lambda t: self.count(t) + budget, length)

    def total(self, n: int) -> int:
        """What RULER 2024's calibration counts: the prompt and the answers run on."""
        text, answer = self.make(n)
        return self.count(text + " ".join(answer))


# ---------------------------------------------------------------- variable tracking (variable_tracking.py)
class _VariableTracking:
    def __init__(self, spec: TaskSpec, count: Counter, length: int, seed: int) -> None:
        self.spec, self.count, self.length = spec, count, length
        self.rng, self.np_rng = random.Random(seed), np.random.RandomState(seed)
        self.chains, self.hops = spec.args["num_chains"], spec.args["num_hops"]
        _, self.task_template, self.answer_prefix, _ = FAMILIES["variable_tracking"]
        if spec.version == "2026":
            self.answer_prefix = self.answer_prefix.replace("assgined", "assigned")

    def make_chains(self, is_icl: bool) -> tuple[list[list[str]], list[list[str]]]:
        letters = 3 if is_icl else 5
        hops = min(10, self.hops) if is_icl else self.hops
        names = ["".join(self.rng.choices(string.ascii_uppercase, k=letters)) for _ in range((hops + 1) * self.chains)]
        while len(set(names)) < self.chains * (hops + 1):
            names.append("".join(self.rng.choices(string.ascii_uppercase, k=letters)))
        variables, chains = [], []
        for i in range(0, len(names), hops + 1):  # (as RULER) a duplicate name adds a short extra chain
            these = names[i : i + hops + 1]
            variables.append(these)
            if is_icl and self.spec.version == "2026":  # the example's value is set later (randomize_icl)
                chain = [f"VAR {these[0]} = 12345"]
            else:
                chain = [f"VAR {these[0]} = {self.np_rng.randint(10000, 99999)}"]
            chain += [f"VAR {these[j + 1]} = VAR {these[j]} " for j in range(hops)]
            chains.append(chain)
        return variables, chains

    def insert_chains(self, sentences: list[str], chains: list[list[str]]) -> list[str]:
        """Each chain's lines at sorted random places among the sentences, in order."""
        for chain in chains:
            positions = sorted(self.rng.sample(range(len(sentences)), len(chain)))
            for j, position in enumerate(positions):
                sentences.insert(position + j, chain[j])
        return sentences

    def make(self, num_noises: int, is_icl: bool) -> tuple[str, list[str]]:
        if self.spec.version == "2026":
            return self.make_2026(num_noises, is_icl)
        variables, chains = self.make_chains(is_icl)
        noise = NOISE + "\n"
        sentences = [noise] * num_noises
        if len(sentences) <= len(chains[0]):
            pieces = [x for n in sentences for x in n.split(".")]
            sentences = [p + "." if len(p.strip()) > 0 else p for p in pieces]
            if not len(sentences) > len(chains[0]):
                chains = [chain[: len(sentences) - 1] for chain in chains]
        context = " ".join(self.insert_chains(sentences, chains)).replace(". \n", ".\n")
        template = self.spec.template
        if is_icl:  # (as RULER) drops the model template and the task text's last word ("above." in base)
            cut = template.index(self.task_template[:20])
            cut_answer = template.index(self.answer_prefix[:10])
            template = " ".join(template[cut:cut_answer].split()[:-1]) + template[cut_answer:]
        value = chains[0][0].split("=")[-1].strip()
        return template.format(context=context, query=value, num_v=self.hops + 1), variables[0]

    def samples_at(self, num_samples: int, length: int, incremental: int, icl: Sample | None) -> list[Sample]:
        budget = self.spec.tokens_to_generate
        is_icl, example, example_tokens = icl is None, "", 0
        if icl is not None:
            example = icl.input + " " + " ".join(icl.outputs) + "\n\n"
            example_tokens = self.count(example)

        def total(n: int) -> int:
            text, answer = self.make(n, is_icl)
            return self.count(text + f" {answer}")  # (as RULER) the answer list's repr

        num = _grow(total, incremental, budget + example_tokens, length)
        measure = lambda t: self.count(t) + budget + example_tokens  # noqa: E731
        out = _draw(lambda i: lambda n: self.make(n, is_icl), num_samples, num, incremental, measure, length)
        if icl is not None:  # the example goes in after the length is measured (as RULER)
            for sample in out:
                cut = sample.input.index(self.task_template[:20])
                sample.input = sample.input[:cut] + " " + example + "\n\n" + sample.input[cut:]
        return out

    def make_2026(self, num_noises: int, is_icl: bool) -> tuple[str, list[str]]:
        """c3f5e3b's draw (``noise`` haystack): the sentences joined by newlines, the chain lines among them;
        the in-context example keeps the task's own template."""
        variables, chains = self.make_chains(is_icl)
        value = chains[0][0].split("=")[-1].strip()
        context = "\n".join(self.insert_chains([NOISE] * num_noises, chains)).replace(". \n", ".\n")
        template = self.spec.template
        if is_icl and template != self.task_template + self.answer_prefix:  # (as RULER) drops a model template
            template = self.task_template + self.answer_prefix
        return template.format(context=context, query=value, num_v=self.hops + 1), variables[0]

    def randomize_example(self, example: str) -> str:
        """c3f5e3b's randomize_icl: new names for the example's answer variables (every occurrence) and a
        new value for its 12345."""
        for item in example.strip().split()[-self.hops - 1 :]:
            example = example.replace(item, "".join(self.rng.choices(string.ascii_uppercase, k=len(item))))
        return example.replace("12345", str(self.np_rng.randint(10000, 99999)))

    def samples_2026(self, num_samples: int, length: int, icl: Sample | None) -> list[Sample]:
        budget = self.spec.tokens_to_generate if icl is not None else 0
        if icl is not None:
            incremental = 5 if self.length < 4096 else 10
            example = icl.input + " " + " ".join(icl.outputs) + "\n"
            example_tokens = self.count(example)
        else:
            incremental, example, example_tokens = 5, "", 0
        is_icl = icl is None
        num = _calibrate(self.count, lambda n: self.make(n, is_icl)[0], incremental, example_tokens + budget, length)

        def make(n: int) -> tuple[str, list[str]]:
            text, answer = self.make(n, is_icl)
            if icl is not None:  # the example, renamed, between the model template and the task
                cut = text.index(self.task_template[:20])
                text = text[:cut] + self.randomize_example(example) + "\n" + text[cut:]
            return text, answer

        return _draw(lambda i: make, num_samples, num, incremental, lambda t: self.count(t) + budget, length)

    def samples(self, num_samples: int) -> list[Sample]:
        if self.spec.version == "2026":
            icl = self.samples_2026(1, 500, None)[0]
            return self.samples_2026(num_samples, self.length, icl)
        try:
            icl = self.samples_at(1, 500, 5, None)[0]  # RULER's in-context example: 500 tokens at most
        except UserError:
            raise UserError(
                "RULER's in-context example must fit in 500 tokens of this tokenizer, and it does not "
                "(RULER itself would retry forever): leave vt out",
                field="--tasks",
            ) from None
        return self.samples_at(num_samples, self.length, 10, icl)


# ---------------------------------------------------------------- common words (common_words_extraction.py)
class _CommonWords:
    def __init__(self, spec: TaskSpec, count: Counter, length: int, seed: int) -> None:
        self.spec, self.count, self.length, self.seed = spec, count, length, seed
        self.rng = random.Random(seed)
        words = sorted(
            set(
                resources.word_list("nounlist") + resources.word_list("adjectivelist") + resources.word_list("verblist")
            )
        )
        random.Random(seed).shuffle(words)
        self.words = words

    def example(self, num_words: int, common_repeats: int, uncommon_repeats: int, common: int):
        if num_words > len(self.words):  # RULER 2026 draws from its 8.5 MB English word file (Git LFS) here
            raise UserError(
                f"{num_words} words are more than wonderwords' {len(self.words)}: RULER {self.spec.version} takes "
                "the rest from its json/english_words.json, which is not available offline: give shorter --lengths",
                field="--lengths",
            )
        picked = self.rng.sample(self.words, num_words)
        common_words, uncommon = picked[:common], picked[common:]
        listed = common_words * int(common_repeats) + uncommon * int(uncommon_repeats)
        random.Random(self.seed).shuffle(listed)
        return " ".join(f"{i + 1}. {w}" for i, w in enumerate(listed)), common_words

    def make(self, num_words: int) -> tuple[str, list[str]]:
        a = self.spec.args
        if self.length < 4096:
            context_example, answer_example = self.example(20, 3, 1, a["num_cw"])
            context, answer = self.example(num_words, 6, 1, a["num_cw"])
        else:
            context_example, answer_example = self.example(40, 10, 3, a["num_cw"])
            context, answer = self.example(num_words, a["freq_cw"], a["freq_ucw"], a["num_cw"])
        template = self.spec.template
        listed = " ".join(f"{i + 1}. {w}" for i, w in enumerate(answer_example))
        if self.spec.version == "2026":  # one few-shot example, its answer after a space
            shown = template.format(context=context_example, query="") + " " + listed
        else:
            shown = template.format(context=context_example, query="") + listed
        return shown + "\n" + template.format(context=context, query=""), answer

    def samples(self, num_samples: int) -> list[Sample]:
        budget, length, incremental = self.spec.tokens_to_generate, self.length, 10
        if self.spec.version == "2026":  # its estimate: a 4,096-word draw, then up to twice the words
            widen = lambda length, per_word: int(length // per_word) * 2  # noqa: E731
            num = _calibrate(self.count, lambda n: self.make(n)[0], incremental, budget, length, 4096, widen)
        else:

            def total(n: int) -> int:
                text, answer = self.make(n)
                return self.count(text + " " + " ".join(f"{i + 1}. {w}" for i, w in enumerate(answer)))

            num = _grow(total, incremental, budget, length, cap=len(self.words))
        return _draw(lambda i: self.make, num_samples, num, incremental, lambda t: self.count(t) + budget, length)


# ---------------------------------------------------------------- frequent words (freq_words_extraction.py)
class _FrequentWords:
    WORD_LENGTH = 6

    def __init__(self, spec: TaskSpec, count: Counter, length: int, seed: int) -> None:
        self.spec, self.count, self.length, self.seed = spec, count, length, seed
        self.rng = random.Random(seed)
        self.alpha = float(spec.args["alpha"])

    def make(self, max_len: int, num_words: int, vocab_size: int, incremental: int):
        vocab = ["".join(self.rng.choices(string.ascii_lowercase, k=self.WORD_LENGTH)) for _ in range(vocab_size)]
        while len(set(vocab)) < vocab_size:
            vocab.append("".join(self.rng.choices(string.ascii_lowercase, k=self.WORD_LENGTH)))
        vocab = sorted(set(vocab))
        random.Random(self.seed).shuffle(vocab)
        vocab[0] = "..."  # the most frequent word is noise

        def text_of(n: int):
            ranks = np.arange(1, len(vocab) + 1)
            counts = (n * (ranks**-self.alpha) / zeta(self.alpha)).astype(int)
            words = [w for w, c in zip(vocab, counts) for _ in range(c)]
            random.Random(self.seed).shuffle(words)
            return self.spec.template.format(context=" ".join(words), query=""), vocab[1:4]

        if num_words > 0:
            text, answer = text_of(num_words)
            while self.count(text) > max_len:
                num_words -= incremental
                text, answer = text_of(num_words)
        else:
            num_words = max_len // self.WORD_LENGTH
            text, answer = text_of(num_words)
            while self.count(text) < max_len:
                num_words += incremental
                text, answer = text_of(num_words)
            num_words -= incremental
        text, answer = text_of(num_words)
        return text, answer, num_words

    def samples(self, num_samples: int) -> list[Sample]:
        length, budget = self.length, self.spec.tokens_to_generate
        if self.spec.version == "2026":  # the budget now comes out of the length
            length -= budget
        vocab_size, step = length // 50, length // 32
        _, _, num_words = self.make(length, -1, vocab_size, step)
        out = []
        for index in range(num_samples):  # (as RULER) the text fills the length; the budget comes on top
            text, answer, _ = self.make(length, num_words, vocab_size, step)
            out.append(Sample(index, text, answer, self.count(text) + budget))
        return out


# ---------------------------------------------------------------- question answering (qa.py)
def read_squad(path: str | Path) -> tuple[list[dict], list[str]]:
    data = _read_json(path)
    try:
        docs = sorted({p["context"] for d in data["data"] for p in d["paragraphs"]})
        index = {c: i for i, c in enumerate(docs)}
        qas = []
        for d in data["data"]:
            siblings = [index[p["context"]] for p in d["paragraphs"]]
            for p in d["paragraphs"]:
                for qa in p["qas"]:
                    if not qa["is_impossible"]:
                        qas.append(
                            {
                                "query": qa["question"],
                                "outputs": [a["text"] for a in qa["answers"]],
                                "context": [index[p["context"]]],
                                "more_context": [i for i in siblings if i != index[p["context"]]],
                            }
                        )
    except (KeyError, TypeError) as err:
        raise UserError(f"not SQuAD 2.0's format (missing {err})", file=str(path), field="--qa_data") from None
    return qas, docs


def read_hotpotqa(path: str | Path) -> tuple[list[dict], list[str]]:
    data = _read_json(path)
    try:
        docs = sorted({f"{t}\n{''.join(p)}" for d in data for t, p in d["context"]})
        index = {c: i for i, c in enumerate(docs)}
        qas = [
            {
                "query": d["question"],
                "outputs": [d["answer"]],
                "context": [index[f"{t}\n{''.join(p)}"] for t, p in d["context"]],
            }
            for d in data
        ]
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"not HotpotQA's format (missing {err})", file=str(path), field="--qa_data") from None
    return qas, docs


def _read_json(path: str | Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as err:
        raise UserError(f"cannot read the QA data ({err.strerror or err})", file=str(path), field="--qa_data") from None
    except json.JSONDecodeError as err:
        raise UserError(f"not JSON ({err.msg} at line {err.lineno}, column {err.colno})", file=str(path)) from None


class _QA:
    def __init__(self, spec: TaskSpec, count: Counter, length: int, seed: int, data: str | Path | None) -> None:
        if data is None:
            raise UserError(
                f"{spec.name} needs the {spec.args['dataset']} dev file (RULER's json/{spec.args['dataset']}.json): "
                f"give --qa_data {spec.args['dataset']}=PATH, or leave the QA tasks out",
                field="--qa_data",
            )
        self.spec, self.count, self.length, self.seed = spec, count, length, seed
        self.rng = random.Random(seed)
        self.qas, self.docs = (read_squad if spec.args["dataset"] == "squad" else read_hotpotqa)(data)

    def make(self, index: int, num_docs: int) -> tuple[str, list[str]]:
        qa = self.qas[index]
        own, more = qa["context"], qa.get("more_context", [])
        if num_docs < len(self.docs):
            if (num_docs - len(own)) > len(more):
                extra = [i for i, _ in enumerate(self.docs) if i not in own + more]
                picked = own + more + self.rng.sample(extra, max(0, num_docs - len(own) - len(more)))
            else:
                picked = own + self.rng.sample(more, num_docs - len(own))
            documents = [self.docs[i] for i in picked]
        elif self.spec.version == "2026":  # every document, repeated as needed
            documents = (self.docs * -(-num_docs // len(self.docs)))[:num_docs]
        else:
            documents = self.docs  # (as RULER) shuffled in place below, for every later sample too
        random.Random(self.seed).shuffle(documents)
        context = "\n\n".join(f"Document {i + 1}:\n{d}" for i, d in enumerate(documents))
        return self.spec.template.format(context=context, query=qa["query"]), qa["outputs"]

    def samples(self, num_samples: int) -> list[Sample]:
        budget, length, incremental = self.spec.tokens_to_generate, self.length, 10
        if num_samples > len(self.qas):
            raise UserError(
                f"{num_samples} samples asked, the QA data has {len(self.qas)} questions", field="--samples"
            )
        if self.spec.version == "2026":
            num = _calibrate(self.count, lambda n: self.make(0, n)[0], incremental, budget, length)
        else:

            def total(n: int) -> int:
                text, answer = self.make(0, n)
                return self.count(text + f" {answer}")  # (as RULER) the answer list's repr

            num = _grow(total, incremental, budget, length, cap=len(self.docs))
        make_at = lambda i: lambda n: self.make(i, n)  # noqa: E731
        return _draw(make_at, num_samples, num, incremental, lambda t: self.count(t) + budget, length)


def generate(
    spec: TaskSpec,
    count: Counter,
    length: int,
    num_samples: int,
    seed: int = 42,
    qa_data: str | Path | None = None,
) -> list[Sample]:
    """``num_samples`` samples of task ``spec`` at ``length`` tokens (RULER's ``max_seq_length``,
    generation budget included), exactly as RULER's generator makes them with the same tokenizer and seed."""
    try:
        samples = _generate(spec, count, length, num_samples, seed, qa_data)
        if any(not s.outputs for s in samples):  # RULER would divide by zero when scoring them
            raise UserError("the length is too short for this task: a sample has no answer left to ask")
        return samples
    except UserError as err:
        raise UserError(
            f"{spec.name} at {length} tokens: {err.message}", file=err.file, field=err.field or "--lengths"
        ) from None


def _generate(spec: TaskSpec, count: Counter, length: int, num_samples: int, seed: int, qa_data) -> list[Sample]:
    if spec.family == "niah":
        return _Niah(spec, count, length, seed).samples(num_samples)
    if spec.family == "variable_tracking":
        return _VariableTracking(spec, count, length, seed).samples(num_samples)
    if spec.family == "common_words_extraction":
        return _CommonWords(spec, count, length, seed).samples(num_samples)
    if spec.family == "freq_words_extraction":
        return _FrequentWords(spec, count, length, seed).samples(num_samples)
    if spec.family == "qa":
        return _QA(spec, count, length, seed, qa_data).samples(num_samples)
    raise ValueError(f"unknown RULER task family {spec.family!r}")
