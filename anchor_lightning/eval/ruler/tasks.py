"""RULER's tasks as NVIDIA/RULER defines them: parameters (``scripts/synthetic.yaml``), templates,
answer prefixes and generation budgets (``scripts/data/synthetic/constants.py``), metrics
(``scripts/eval/synthetic/constants.py``), verbatim, for the release the paper used.

Versions: ``2024`` is NVIDIA/RULER at commit e40fae1 (2024-10-10), the release of the paper's era and
the default; ``2026`` is its latest commit, c3f5e3b (2026-07-22), whose generators were rewritten in
2025 (binary-search calibration, a ``noise`` haystack for ``vt``, few-shot ``cwe``, the typo of ``vt``'s
answer prefix fixed). Task sets: ``all`` (13 tasks), ``offline`` (all but the two QA tasks, whose data sets
cannot ship), ``paper`` (the 11 tasks the AnchorAttention paper averages for LLaMA-2: all but
niah_multikey_3 and cwe) and ``paper_offline`` (those 11 less QA).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from anchor_lightning.errors import UserError

VERSIONS = {"2024": "e40fae14df4e439bb355d395b574ac4e7398036d", "2026": "c3f5e3b4f87f97e048793bb510a3a6b19a46bf3a"}
DEFAULT_VERSION = "2024"

# family -> (generation budget, task template, answer prefix, metric): constants.py of e40fae1
FAMILIES = {
    "niah": (
        128,
        "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all the special magic "
        "{type_needle_v} for {query} mentioned in the provided text?",
        " The special magic {type_needle_v} for {query} mentioned in the provided text are",
        "all",
    ),
    "variable_tracking": (
        30,
        "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
        "Question: Find all variables that are assigned the value {query} in the text above.",
        " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
        "assgined the value {query}, they are: ",
        "all",
    ),
    "common_words_extraction": (
        120,
        "Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
        "ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?",
        " Answer: The top 10 words that appear most often in the list are:",
        "all",
    ),
    "freq_words_extraction": (
        50,
        "Read the following coded text and track the frequency of each coded word. Find the three most "
        "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore "
        "the dots '....'. What are the three most frequently appeared words in the above coded text?",
        " Answer: According to the coded text above, the three most frequently appeared words are:",
        "all",
    ),
    "qa": (
        32,
        "Answer the question based on the given documents. Only give me the answer and do not output any other "
        "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
        "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}",
        " Answer:",
        "part",
    ),
}


def _niah(haystack: str, key: str, value: str, k: int = 1, v: int = 1, q: int = 1) -> dict:
    return dict(
        type_haystack=haystack, type_needle_k=key, type_needle_v=value, num_needle_k=k, num_needle_v=v, num_needle_q=q
    )


# synthetic.yaml of e40fae1: task -> (family, arguments)
TASKS = {
    "niah_single_1": ("niah", _niah("repeat", "words", "numbers")),
    "niah_single_2": ("niah", _niah("essay", "words", "numbers")),
    "niah_single_3": ("niah", _niah("essay", "words", "uuids")),
    "niah_multikey_1": ("niah", _niah("essay", "words", "numbers", k=4)),
    "niah_multikey_2": ("niah", _niah("needle", "words", "numbers")),
    "niah_multikey_3": ("niah", _niah("needle", "uuids", "uuids")),
    "niah_multivalue": ("niah", _niah("essay", "words", "numbers", v=4)),
    "niah_multiquery": ("niah", _niah("essay", "words", "numbers", q=4)),
    "vt": ("variable_tracking", dict(num_chains=1, num_hops=4)),
    "cwe": ("common_words_extraction", dict(freq_cw=30, freq_ucw=3, num_cw=10)),
    "fwe": ("freq_words_extraction", dict(alpha=2.0)),
    "qa_1": ("qa", dict(dataset="squad")),
    "qa_2": ("qa", dict(dataset="hotpotqa")),
}
QA_TASKS = ("qa_1", "qa_2")
QA_DATASETS = {"qa_1": "squad", "qa_2": "hotpotqa"}
TASK_SETS = {
    "all": tuple(TASKS),
    "offline": tuple(t for t in TASKS if t not in QA_TASKS),
    "paper": tuple(t for t in TASKS if t not in ("niah_multikey_3", "cwe")),
    "paper_offline": tuple(t for t in TASKS if t not in ("niah_multikey_3", "cwe", *QA_TASKS)),
}


@dataclass(frozen=True)
class TaskSpec:
    """One task: its family's generator, arguments, budget, the full prompt template (model template +
    task template + answer prefix, as RULER's ``prepare.py`` assembles it) and metric."""

    name: str
    family: str
    args: dict = field(hash=False)
    tokens_to_generate: int
    template: str
    metric: str  # "all" (string_match_all) or "part" (string_match_part)
    version: str = DEFAULT_VERSION

    @property
    def needs(self) -> set[str]:
        """The offline inputs this task reads: ``essay``, ``words``, ``qa``."""
        if self.family == "niah":
            out = {"essay"} if self.args["type_haystack"] == "essay" else set()
            if "words" in (self.args["type_needle_k"], self.args["type_needle_v"]):
                out.add("words")
            return out
        return {"common_words_extraction": {"words"}, "qa": {"qa"}}.get(self.family, set())


def task_spec(name: str, model_template: str = "{task_template}", version: str = DEFAULT_VERSION) -> TaskSpec:
    """The task ``name`` of RULER ``version`` wrapped in ``model_template`` (RULER's ``base`` template is
    ``{task_template}``: the task's text alone)."""
    if version not in VERSIONS:
        raise UserError(
            f"unknown RULER version {version!r} (choose from {', '.join(VERSIONS)})", field="--ruler_version"
        )
    if name not in TASKS:
        raise UserError(f"unknown RULER task {name!r} (choose from {', '.join(TASKS)})", field="--tasks")
    family, args = TASKS[name]
    budget, template, prefix, metric = FAMILIES[family]
    args = dict(args)
    if version == "2026":  # synthetic.yaml and constants.py at c3f5e3b
        if args.get("type_haystack") == "repeat":
            args["type_haystack"] = "noise"
        if family == "variable_tracking":
            args["type_haystack"] = "noise"
        prefix = prefix.replace("assgined", "assigned")
    return TaskSpec(name, family, args, budget, model_template.format(task_template=template) + prefix, metric, version)


def resolve_tasks(names: list[str]) -> list[str]:
    """Task names, with task-set names expanded in place (duplicates dropped, order kept)."""
    out: list[str] = []
    for name in names:
        for task in TASK_SETS.get(name, (name,)):
            if task not in TASKS:
                choices = ", ".join([*TASK_SETS, *TASKS])
                raise UserError(f"unknown RULER task or set {task!r} (choose from {choices})", field="--tasks")
            if task not in out:
                out.append(task)
    return out
