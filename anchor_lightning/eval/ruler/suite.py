"""RULER on a model: samples built (in parallel, cached), prompts generated greedily, scored, summarised.

The steps, each a function a caller (``evaluate --suite ruler``, the training callback, tests) can use:

1. :func:`prepare_samples`: every (task, length) pair's samples from RULER's own generators
   (``synthetic.py``), built in worker processes (each pair is independent) and cached under
   ``$ANCHOR_LIGHTNING_CACHE/ruler`` by everything that changes them (version, task, length, samples,
   seed, template, the tokenizer's own definition, the data's digests).
2. :func:`generate_predictions`: the prompts, tokenized as the model expects (its first token, then the
   prompt without special tokens; or exactly ``tokenizer(prompt)`` as RULER feeds it), through batched
   greedy generation (``anchor_lightning/eval/generation.py``) with each task's budget. Ranks that
   share a sharded model each take a share of the samples and decode in step.
3. :func:`summarise`: RULER's scores per task and length, the unweighted mean over tasks, a 95%
   interval on each, and every sample's prediction and score (for paired comparisons: :func:`compare`).
"""

from __future__ import annotations

import concurrent.futures as futures
import functools
import gzip
import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from anchor_lightning.errors import UserError
from anchor_lightning.eval.ruler import resources
from anchor_lightning.eval.ruler.metrics import postprocess, sample_score, task_score
from anchor_lightning.eval.ruler.synthetic import Sample, generate
from anchor_lightning.eval.ruler.tasks import (
    DEFAULT_VERSION,
    QA_DATASETS,
    QA_TASKS,
    TASK_SETS,
    VERSIONS,
    resolve_tasks,
    task_spec,
)
from anchor_lightning.eval.stats import mean_interval, paired_difference
from anchor_lightning.messages import Count
from anchor_lightning.paths import atomic_write, cache_dir, exclusive, write_figure

SENTINEL = "\x00task\x00"


@dataclass
class RulerSettings:
    """What a RULER run is: tasks (names or sets), lengths (RULER's ``max_seq_length``: prompt plus
    generation budget), samples per task and length, RULER's seed, version and template (``base``: the
    task text alone; ``chat``: wrapped in the tokenizer's chat template), the QA files by data set, and
    the prompt's first token (None: the model's BOS; ``tokenizer_specials``: exactly what
    ``tokenizer(prompt)`` adds, as RULER feeds it), and the attention kernel of the prefill on a GPU
    (``anchor_lightning/eval/generation.py``'s ``prefill_kernel_for``)."""

    tasks: list[str] = field(default_factory=lambda: ["offline"])
    lengths: list[int] = field(default_factory=lambda: [4096])
    samples: int = 500
    seed: int = 42
    version: str = DEFAULT_VERSION
    template: str = "base"
    qa_data: dict[str, str] = field(default_factory=dict)
    first_token: int | None = None
    tokenizer_specials: bool = False
    prefill_kernel: str = "auto"

    def task_names(self) -> list[str]:
        return resolve_tasks(self.tasks)

    def check(self) -> None:
        """One-line errors for settings that cannot run, before any work."""
        names = self.task_names()
        if self.version not in VERSIONS:
            raise UserError(
                f"unknown RULER version {self.version!r} (choose from {', '.join(VERSIONS)})", field="--ruler_version"
            )
        from anchor_lightning.eval.generation import check_prefill_kernel

        check_prefill_kernel(self.prefill_kernel)
        if self.template not in ("base", "chat"):
            raise UserError(f"unknown template {self.template!r} (choose base or chat)", field="--template")
        if self.samples < 1:
            raise UserError(f"--samples must be at least 1, got {self.samples}", field="--samples")
        if not self.lengths or min(self.lengths) < 256:
            raise UserError(f"RULER lengths must be at least 256 tokens, got {self.lengths}", field="--lengths")
        unknown = set(self.qa_data) - set(QA_DATASETS.values())
        if unknown:
            raise UserError(
                f"unknown QA data set {sorted(unknown)[0]!r} (give squad=PATH and/or hotpotqa=PATH)", field="--qa_data"
            )
        for name, path in self.qa_data.items():
            if not Path(path).is_file():
                raise UserError(f"no such {name} file", file=str(path), field="--qa_data")
        missing = [t for t in names if t in QA_TASKS and QA_DATASETS[t] not in self.qa_data]
        if missing:
            raise UserError(
                f"{', '.join(missing)} need{'s' if len(missing) == 1 else ''} the "
                f"{' and '.join(QA_DATASETS[t] for t in missing)} dev file{'s' if len(missing) > 1 else ''}, which cannot "
                "ship: give --qa_data squad=PATH hotpotqa=PATH (RULER's json/squad.json, json/hotpotqa.json), or "
                "--tasks offline",
                field="--qa_data",
            )
        needs = set().union(*(task_spec(t).needs for t in names))
        if "essay" in needs:
            resources.essay_text()
            resources.sentence_splitter()
        if "words" in needs:
            resources.word_list("nounlist")

    def average_name(self) -> str:
        """RULER's average is over its tasks with QA: without QA it is named so, never plain RULER."""
        names = self.task_names()
        has_qa = all(t in names for t in QA_TASKS)
        if tuple(names) == TASK_SETS["all"]:
            return "RULER"
        for set_name, members in TASK_SETS.items():
            if tuple(names) == members:
                return f"RULER ({set_name} set, {len(names)} tasks{'' if has_qa else ', no QA'})"
        return f"RULER ({len(names)} tasks{'' if has_qa else ', no QA'})"


# ------------------------------------------------------------------ 1. samples
def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of the tokenizer's own definition (its whole serialized form when it has one)."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps(tokenizer.all_special_tokens).encode())
    return digest.hexdigest()[:20]


def model_template(tokenizer, template: str) -> str:
    """RULER's model template: ``{task_template}`` for ``base``; for ``chat`` the tokenizer's chat
    template around one user turn, with the assistant's turn opened."""
    if template == "base":
        return "{task_template}"
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the tokenizer has no chat template: use --template base", field="--template")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": SENTINEL}], tokenize=False, add_generation_prompt=True
    )
    return rendered.replace("{", "{{").replace("}", "}}").replace(SENTINEL, "{task_template}")


@functools.cache
def _worker_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _make_pair(job: dict) -> list[dict]:
    tokenizer = _worker_tokenizer(job["tokenizer"])
    spec = task_spec(job["task"], job["model_template"], job["version"])
    count = lambda text: len(tokenizer.tokenize(text))  # noqa: E731  RULER's count: no special tokens
    samples = generate(spec, count, job["length"], job["samples"], job["seed"], job.get("qa"))
    return [s.as_json() for s in samples]


def _cache_key(job: dict, fingerprint: str, digests: dict) -> str:
    what = {k: v for k, v in job.items() if k != "tokenizer"}
    return hashlib.sha256(json.dumps([what, fingerprint, digests], sort_keys=True).encode()).hexdigest()[:24]


def prepare_samples(
    tokenizer_path: str, settings: RulerSettings, workers: int | None = None, progress: bool = True
) -> tuple[dict[tuple[str, int], list[Sample]], dict]:
    """Every (task, length) pair's samples, from the cache or built in ``workers`` processes; and the
    digests of what they were built from."""
    from transformers import AutoTokenizer

    settings.check()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    template = model_template(tokenizer, settings.template)
    names = settings.task_names()
    needs = set().union(*(task_spec(t).needs for t in names))
    qa_files = {d: p for d, p in settings.qa_data.items() if any(QA_DATASETS[t] == d for t in names)}
    digests = resources.digests(needs, qa_files)
    fingerprint = tokenizer_fingerprint(tokenizer)
    jobs, out, todo = {}, {}, []
    root = cache_dir("ruler")
    for task in names:
        for length in settings.lengths:
            job = dict(
                tokenizer=tokenizer_path, task=task, length=length, samples=settings.samples, seed=settings.seed,
                version=settings.version, model_template=template,
            )  # fmt: skip
            if task in QA_TASKS:
                job["qa"] = settings.qa_data[QA_DATASETS[task]]
            path = root / f"{task}-{length}-{_cache_key(job, fingerprint, digests)}.json.gz"
            jobs[task, length] = (job, path)
            if path.is_file():
                out[task, length] = _read_samples(path)
            else:
                todo.append((task, length))
    if todo:
        root.mkdir(parents=True, exist_ok=True)
        with exclusive(root / ".build.lock", "waiting for another process building RULER samples"):
            made = [pair for pair in todo if jobs[pair][1].is_file()]  # by that process, meanwhile
            out.update({pair: _read_samples(jobs[pair][1]) for pair in made})
            _build_samples([pair for pair in todo if pair not in made], jobs, out, workers, progress)
    return {pair: out[pair] for pair in jobs}, {"tokenizer": fingerprint, **digests}


def _read_samples(path: Path) -> list[Sample]:
    return [Sample(**s) for s in json.loads(gzip.decompress(path.read_bytes()))]


def _build_samples(todo: list, jobs: dict, out: dict, workers: int | None, progress: bool) -> None:
    """Build the ``todo`` pairs' samples in ``workers`` processes, each stored in the cache as it comes.
    The longest lengths go first: a pair's time grows with its length (on SmolLM2's tokenizer 1-2 s at
    4K, 7-20 s at 32K, 33-54 s at 64K on one core), and started last they would run on alone at the end
    (4K-32K on 16 workers, from those times: 31 s in task order, 20 s longest first)."""
    if not todo:
        return
    todo = sorted(todo, key=lambda pair: -pair[1])  # stable: task order within a length
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    bar = Count(len(todo), "RULER samples", "group", bar=progress)  # a group: one task at one length

    def store(pair: tuple[str, int], made: list[dict]) -> None:
        atomic_write(jobs[pair][1], gzip.compress(json.dumps(made).encode()))
        out[pair] = [Sample(**s) for s in made]
        bar.update(1)

    try:
        if workers == 1:
            for pair in todo:
                store(pair, _make_pair(jobs[pair][0]))
        else:  # spawn: safe after CUDA started; each worker loads only the tokenizer
            context = multiprocessing.get_context("spawn")
            with futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                running = {pool.submit(_make_pair, jobs[pair][0]): pair for pair in todo}
                for done in futures.as_completed(running):
                    store(running[done], done.result())
    finally:
        bar.close()


# ------------------------------------------------------------------ 2. predictions
def prompt_ids(tokenizer, texts: list[str], first_token: int | None, tokenizer_specials: bool) -> list[list[int]]:
    """The ids the model reads, for each text: ``first_token`` then the prompt without special tokens, or
    exactly ``tokenizer(text)`` (RULER's way: whatever the tokenizer adds). One call for all the texts: a
    fast tokenizer encodes a batch on every core (100 prompts of 32K tokens: seconds one by one)."""
    if tokenizer_specials:
        return list(tokenizer(texts)["input_ids"])
    head = [first_token] if first_token is not None else []
    return [head + ids for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def model_first_token(model, tokenizer) -> int | None:
    """The model's first token: its config's BOS (an export writes its anchor there), else the tokenizer's."""
    bos = getattr(model.config, "bos_token_id", None)
    if isinstance(bos, list):
        bos = bos[0] if bos else None
    return bos if bos is not None else getattr(tokenizer, "bos_token_id", None)


@dataclass
class Shard:
    """Ranks that share one sharded model: each takes every ``world``-th sample, padded so every rank
    runs the same forward passes; ``reduce_min`` agrees on a batch size, ``all_done`` on stopping."""

    rank: int = 0
    world: int = 1
    reduce_min: Callable[[int], int] = staticmethod(lambda x: x)
    all_done: Callable[[bool], bool] | None = None


def generate_predictions(
    model,
    tokenizer,
    samples: dict[tuple[str, int], list[Sample]],
    settings: RulerSettings,
    stats=None,
    progress: bool = True,
    shard: Shard | None = None,
    most: int = 256,
    log: Callable[[str], None] | None = None,
    earlier: Callable[[str, int], list[dict] | None] | None = None,
    finished: Callable[[str, int, list[dict]], None] | None = None,
) -> list[dict]:
    """This rank's records: task, length, index, prompt tokens, prediction text and score per sample.
    ``log`` gets one line per task and length with its time (a log file's progress). ``earlier`` gives a
    group's records from an earlier run of the same evaluation, which are taken instead of generating
    (``partial.PartialRuler.get``); ``finished`` gets each group's records once they are all scored
    (``partial.PartialRuler.add``)."""
    import time

    from anchor_lightning.eval.generation import (
        GenerationStats,
        free_memory,
        generate_batch,
        plan_batch,
        prefill_kernel_for,
        stop_token_ids,
    )

    shard = shard or Shard()
    stats = stats if stats is not None else GenerationStats()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    stops = stop_token_ids(model, tokenizer)
    kernel = prefill_kernel_for(settings.prefill_kernel, model)
    first = settings.first_token if settings.first_token is not None else model_first_token(model, tokenizer)
    total = sum(len(v) for v in samples.values())
    records: list[dict] = []
    bar = tqdm(total=total, desc="RULER", unit="sample", disable=not progress)
    for (task, length), group in samples.items():
        taken = earlier(task, length) if earlier is not None else None
        if taken is not None:
            records += taken
            bar.update(len(group))
            if log is not None:
                log(f"RULER {task} at {length}: {len(taken)} samples from an earlier run")
            continue
        spec = task_spec(task, version=settings.version)
        first_record = len(records)
        ids = prompt_ids(tokenizer, [s.input for s in group], first, settings.tokenizer_specials)
        mine = list(range(shard.rank, len(group), shard.world))
        share = -(-len(group) // shard.world)
        padded = mine + [mine[0] if mine else 0] * (share - len(mine))  # repeats, dropped below
        longest = max(len(i) for i in ids)
        size = shard.reduce_min(
            plan_batch(model.config, longest, spec.tokens_to_generate, dtype, free_memory(device), most, "RULER prompt")
        )
        order = sorted(range(len(padded)), key=lambda k: -len(ids[padded[k]]))
        bar.set_postfix_str(f"{task} {length}")
        began, before = time.perf_counter(), GenerationStats(**vars(stats))
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            outputs = generate_batch(
                model,
                [ids[padded[k]] for k in chunk],
                spec.tokens_to_generate,
                stops,
                capacity=longest,
                stats=stats,
                all_done=shard.all_done,
                prefill_kernel=kernel,
            )
            for k, out in zip(chunk, outputs):
                if k >= len(mine):
                    continue
                sample = group[padded[k]]
                text = tokenizer.decode(out, skip_special_tokens=True)
                records.append(
                    {
                        "task": task,
                        "length": length,
                        "index": sample.index,
                        "prompt_tokens": len(ids[padded[k]]),
                        "ruler_length": sample.length,
                        "prediction": text,
                        "outputs": sample.outputs,
                        "score": sample_score(text, sample.outputs, spec.metric),
                    }
                )
            bar.update(sum(1 for k in chunk if k < len(mine)) * shard.world)
        if finished is not None:
            finished(task, length, records[first_record:])
        if log is not None:
            log(
                f"RULER {task} at {length}: {len(mine)} samples in batches of {size}, {time.perf_counter() - began:.1f} s "
                f"(prefill {stats.prefill_seconds - before.prefill_seconds:.1f} s, decode "
                f"{stats.decode_seconds - before.decode_seconds:.1f} s for {stats.decode_tokens - before.decode_tokens} tokens)"
            )
    bar.close()
    return records


# ------------------------------------------------------------------ 3. summary
def summarise(records: Sequence[dict], settings: RulerSettings) -> dict:
    """Scores per length: each task's (RULER's rounded score, the mean x 100 and its 95% interval, the
    samples and empty predictions), and the unweighted mean over tasks with its interval (Wilson over
    the pooled samples: with equal samples per task their mean is the mean over tasks)."""
    names = settings.task_names()
    table: dict = {}
    for length in settings.lengths:
        tasks = {}
        for task in names:
            picked = [r for r in records if r["task"] == task and r["length"] == length]
            if not picked:
                continue
            scores = [r["score"] for r in picked]
            mean, low, high = mean_interval(scores)
            tasks[task] = {
                "score": round(mean * 100, 4),
                "ruler_score": task_score(scores),
                "low": round(low * 100, 4),
                "high": round(high * 100, 4),
                "samples": len(picked),
                "nulls": sum(1 for r in picked if not postprocess(r["prediction"])),
            }
        pooled = [r["score"] for r in records if r["length"] == length and r["task"] in tasks]
        _, low, high = mean_interval(pooled)
        average = sum(t["score"] for t in tasks.values()) / len(tasks) if tasks else float("nan")
        table[str(length)] = {
            "tasks": tasks,
            "average": {"score": round(average, 4), "low": round(low * 100, 4), "high": round(high * 100, 4)},
        }
    return table


def results(records: Sequence[dict], settings: RulerSettings, data: dict, extra: dict | None = None) -> dict:
    """The whole ``ruler.json``: settings, version, data digests, the score table and every sample."""
    ordered = sorted(records, key=lambda r: (r["length"], settings.task_names().index(r["task"]), r["index"]))
    return {
        "suite": "ruler",
        "version": settings.version,
        "ruler_commit": VERSIONS[settings.version],
        "average_name": settings.average_name(),
        "settings": asdict(settings) | {"tasks": settings.task_names()},
        "data": data,
        "scores": summarise(ordered, settings),
        **(extra or {}),
        "samples": ordered,
    }


def summary_lines(result: dict) -> list[str]:
    lines = [
        f"{result['average_name']} (NVIDIA/RULER {result['version']}, {result['ruler_commit'][:7]}), score 0-100 [95%]"
    ]
    for length, row in result["scores"].items():
        avg = row["average"]
        lines.append(f"  {int(length):>7} tokens: average {avg['score']:6.2f} [{avg['low']:.1f}, {avg['high']:.1f}]")
        for task, cell in row["tasks"].items():
            lines.append(
                f"{'':>12}{task:<16} {cell['score']:6.2f} [{cell['low']:.1f}, {cell['high']:.1f}] "
                f"({cell['samples']} samples, {cell['nulls']} empty)"
            )
    return lines


def heat_map(result: dict, path: Path) -> Path:
    """Tasks x lengths, each cell the task's score, the average in the last row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    lengths = list(result["scores"])
    tasks = list(result["settings"]["tasks"])
    grid = np.full((len(tasks) + 1, len(lengths)), np.nan)
    for j, length in enumerate(lengths):
        row = result["scores"][length]
        for i, task in enumerate(tasks):
            if task in row["tasks"]:
                grid[i, j] = row["tasks"][task]["score"]
        grid[-1, j] = row["average"]["score"]
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 3, 0.42 * len(tasks) + 1.8))
    image = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), [f"{int(n) // 1024}K" if int(n) >= 1024 else n for n in lengths])
    ax.set_yticks(range(len(tasks) + 1), [*tasks, "average"])
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8)
    ax.set(xlabel="length (tokens)", title=result["average_name"])
    fig.colorbar(image, ax=ax, shrink=0.8, label="score")
    write_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def samples_that_differ(a: list[dict], b: list[dict], fields: tuple[str, ...]) -> list[str]:
    """The samples both results hold (by task, length and index) whose ``fields`` differ, named
    ``TASK at LENGTH #INDEX``."""
    key = lambda r: (r["task"], r["length"], r["index"])  # noqa: E731
    theirs = {key(r): r for r in b}
    return [
        f"{r['task']} at {r['length']} #{r['index']}"
        for r in a
        if key(r) in theirs and [r.get(f) for f in fields] != [theirs[key(r)].get(f) for f in fields]
    ]


def settings_of(result: dict) -> RulerSettings:
    """The settings a ``ruler.json`` was evaluated with, its lengths those its score table holds."""
    given = {k: v for k, v in result["settings"].items() if k in RulerSettings.__dataclass_fields__}
    return RulerSettings(**{**given, "lengths": sorted({int(n) for n in result["scores"]})})


def check_scores(result: dict, field: str = "--compare", file: str | None = None) -> None:
    """Refuse a ``ruler.json`` whose scores do not follow from its own predictions: each sample's score
    is RULER's metric of its prediction against its answers, and each length's table is
    :func:`summarise` of those samples. A file edited by hand, or written by other code, is refused in
    one line rather than paired or tabled."""
    version = result.get("version", DEFAULT_VERSION)
    for r in result["samples"]:
        metric = task_spec(r["task"], version=version).metric
        if abs(sample_score(r["prediction"], r["outputs"], metric) - r["score"]) > 1e-9:
            raise UserError(
                f"{r['task']} at {r['length']} #{r['index']} scores {r['score']}, not what RULER's {metric!r} "
                "metric gives its prediction: the file was changed after evaluate wrote it",
                file=file,
                field=field,
            )
    table = summarise(result["samples"], settings_of(result))
    for length, row in result["scores"].items():
        for what, theirs, ours in [("average", row["average"], table[length]["average"])] + [
            (task, score, table[length]["tasks"].get(task, {})) for task, score in row["tasks"].items()
        ]:
            if abs(theirs["score"] - ours.get("score", float("nan"))) > 1e-3 or not ours:
                raise UserError(
                    f"its {what} at {length} reads {theirs['score']}, its samples give {ours.get('score')}: the "
                    "file was changed after evaluate wrote it",
                    file=file,
                    field=field,
                )


def check_same_samples(a: list[dict], b: list[dict], field: str = "--compare") -> None:
    """Refuse to pair two results whose samples of one (task, length, index) are not the same sample:
    other answers or another length by RULER's own count (another seed, RULER version, tokenizer or
    resource), where a paired difference would compare unrelated prompts. How each model was prompted
    (its first token, the tokenizer's specials) may differ: that is what a comparison may be about."""
    differ = samples_that_differ(a, b, ("outputs", "ruler_length"))
    if differ:
        raise UserError(
            f"the two results hold different samples under the same names ({len(differ)} differ, the first "
            f"{differ[0]}: other answers or length): they cannot be paired",
            field=field,
        )


def compare(a: dict, b: dict) -> dict:
    """Two ``ruler.json`` results on the same samples: per length (and over all lengths) the mean over
    tasks of a - b with its 95% interval and a sign test over the samples, and per task and length."""
    check_same_samples(a["samples"], b["samples"])
    key = lambda r: (r["task"], r["length"], r["index"])  # noqa: E731
    left, right = {key(r): r["score"] for r in a["samples"]}, {key(r): r["score"] for r in b["samples"]}
    shared = sorted(set(left) & set(right), key=lambda k: (k[1], k[0], k[2]))
    if not shared:
        raise UserError("the two results share no samples (other tasks, lengths or samples)", field="--compare")
    out: dict = {"samples": len(shared), "lengths": {}}
    for length in sorted({k[1] for k in shared}):
        at = [k for k in shared if k[1] == length]
        per_task = {}
        for task in sorted({k[0] for k in at}):
            ks = [k for k in at if k[0] == task]
            per_task[task] = paired_difference([left[k] for k in ks], [right[k] for k in ks])
        overall = paired_difference([left[k] for k in at], [right[k] for k in at])
        out["lengths"][str(length)] = {"overall": overall, "tasks": per_task}
    out["all"] = paired_difference([left[k] for k in shared], [right[k] for k in shared])
    return out


def write(result: dict, out: Path) -> tuple[Path, Path]:
    """``ruler.json`` (whole or not at all) and ``ruler_heatmap.png`` in ``out``."""
    path = atomic_write(out / "ruler.json", json.dumps(result, indent=1))
    return path, heat_map(result, out / "ruler_heatmap.png")
