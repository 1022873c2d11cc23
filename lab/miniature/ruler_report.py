"""The miniature judged by RULER, in the paper's Table 5 layout: gathered from run.py's result folders,
then rendered as Markdown (two steps: ``gather`` reads, ``render`` writes text; nothing in between
knows about files).

    python lab/miniature/ruler_report.py RESULTS [RESULTS ...] [--result MODEL=RULER_JSON ...] [--out FILE]
        [--figure PNG]

RESULTS: run.py's ``WORK/results`` folders (or unpacked ``miniature-results.tar.gz``), each holding
``MODEL/ruler*/ruler.json`` (or ``ruler.json.xz``) and, for trained modes, ``MODEL/train.json``; ``--result`` adds one
``ruler.json`` as MODEL's (e.g. the base model's, measured once in docs/ruler/); a model's results from
several runs (a length each) are merged, and two runs that predicted a shared sample differently are
refused (two models under one name), and so is a file whose scores do not follow from its own
predictions (``check_scores``). Each model's card is named under the table. The tables: RULER average by model and length with 95% intervals; per length,
every task by model; the paired difference anchor minus each other model on the same samples, per
length and pooled over the lengths beyond the base model's 8K, with its interval and sign test
(``anchor_lightning.eval.ruler.suite.compare``'s rule); training cost per mode; the paper's numbers
for its own setting beside them. ``--figure`` draws the averages by length and the paired differences.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script

from anchor_lightning.errors import UserError  # noqa: E402
from anchor_lightning.eval.ruler.suite import check_same_samples, check_scores, samples_that_differ  # noqa: E402
from anchor_lightning.eval.stats import mean_t_interval, paired_difference  # noqa: E402
from anchor_lightning.paths import atomic_write, write_figure  # noqa: E402

ORDER = ("base", "base-theta", "full", "intra_doc", "intra_doc_reset", "anchor")
UNTRAINED = ("base", "base-theta")  # the pretrained model, labelled by the RoPE base its results record
TRAINED_LENGTH = 8192  # SmolLM2-135M's: "beyond" pools the lengths past it
# The paper's Table 5 (LLaMA-2-7B, RULER; Full / Intra-Doc / +Reset / Anchor), for the reader's scale
PAPER = {
    "SlimPajama-128K at 128K": (62.75, 64.31, 65.75, 66.15),
    "SlimPajama-128K at 64K": (70.56, 70.87, 73.34, 77.69),
}


@dataclass
class Gathered:
    """What the report shows: each model's ruler.json and, for trained modes, train.json."""

    ruler: dict[str, dict] = field(default_factory=dict)
    train: dict[str, dict] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def gather(folders: list[Path], files: Sequence[tuple[str, Path]] = ()) -> Gathered:
    """Every ``MODEL/ruler*/ruler.json[.xz]`` and ``MODEL/train.json`` under ``folders``, then each (MODEL,
    ruler.json) of ``files``."""
    found = Gathered()
    pairs = [
        (path.parent.parent.name, path) for folder in folders for path in sorted(folder.glob("*/ruler*/ruler.json*"))
    ]
    for model, path in pairs + list(files):
        result = read_json(path)
        check_scores(result, field=model, file=str(path))  # the tables follow from the predictions
        merge(found.ruler.setdefault(model, {}), result, f"{model} ({path})")
        found.sources[model] = str(path)
    for folder in folders:
        for path in sorted(folder.glob("*/train.json")):
            found.train[path.parent.name] = json.loads(path.read_text())
    return found


def cards_line(found: Gathered) -> str:
    """Which card each model was evaluated on, models of one card together."""
    by_card: dict[str, list[str]] = {}
    for model in models_of(found):
        by_card.setdefault(found.ruler[model].get("device", "?"), []).append(label(found, model))
    return "Cards: " + "; ".join(f"{', '.join(models)}: {card}" for card, models in by_card.items()) + "."


def read_json(path: Path) -> dict:
    """A ``ruler.json``, or one compressed with xz (``ruler.json.xz``: how docs/ keeps them, a 14th of
    the size, since the GPU machine takes the whole repository in each 64 MiB call)."""
    return json.loads(lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_text())


def merge(into: dict, result: dict, name: str = "the model") -> None:
    """One model's results from several runs (a length a run, or a call each): the scores by length
    and the samples. A sample measured twice must have the same prediction both times (one model, greedy
    decoding); otherwise two models were filed under one name, which is refused in one line."""
    if not into:
        into.update(result, scores=dict(result["scores"]), samples=list(result["samples"]))
        return
    clash = samples_that_differ(result["samples"], into["samples"], ("prediction",))
    if clash:
        raise UserError(
            f"{len(clash)} samples predicted otherwise than by an earlier result of the same name (the first "
            f"{clash[0]}): two runs filed as one model; name them apart",
            field=name,
        )
    into["scores"].update(result["scores"])
    key = lambda s: (s["task"], s["length"], s["index"])  # noqa: E731
    samples = {key(s): s for s in into["samples"]}
    samples.update({key(s): s for s in result["samples"]})
    into["samples"] = list(samples.values())


def label(found: Gathered, model: str) -> str:
    """A model's row name: the mode for a trained one; for the pretrained one, its RoPE base as the
    results record it (base-theta carries the recipes' base, untrained)."""
    if model not in UNTRAINED:
        return model
    theta = found.ruler[model].get("rope_parameters", {}).get("rope_theta")
    return f"base, RoPE {theta:,.0f}" + (" (untrained)" if model == "base-theta" else "") if theta else model


def first_seed(model: str) -> str:
    """The run a second row order repeats: ``MODE-seedK[-VARIANT]`` -> ``MODE[-VARIANT]`` (the names
    lab/miniature/steps.py gives results); any other name is its own."""
    return re.sub(r"-seed\d+(?=-|$)", "", model)


def in_order(names) -> list[str]:
    """The modes' order of the paper's table (seeds after their first), then anything else by name."""
    rank = {m: i for i, m in enumerate(ORDER)}
    return sorted(names, key=lambda m: (rank.get(first_seed(m).split("-")[0], len(ORDER)), m))


def models_of(found: Gathered) -> list[str]:
    return in_order(found.ruler)


def lengths_of(found: Gathered) -> list[int]:
    return sorted({int(n) for r in found.ruler.values() for n in r["scores"]})


def cell(score: dict | None) -> str:
    if score is None:
        return "-"
    return f"{score['score']:.2f} [{score['low']:.1f}, {score['high']:.1f}]"


def average_table(found: Gathered) -> list[str]:
    lengths = lengths_of(found)
    lines = ["| model | " + " | ".join(f"{n // 1024}K" for n in lengths) + " |"]
    lines.append("| --- |" + " ---: |" * len(lengths))
    for model in models_of(found):
        scores = found.ruler[model]["scores"]
        row = [cell(scores.get(str(n), {}).get("average")) for n in lengths]
        lines.append(f"| {label(found, model)} | " + " | ".join(row) + " |")
    return lines


def task_tables(found: Gathered) -> list[str]:
    models = models_of(found)
    lines: list[str] = []
    for n in lengths_of(found):
        tasks = sorted({t for m in models for t in found.ruler[m]["scores"].get(str(n), {}).get("tasks", {})})
        if not tasks:
            continue
        lines += ["", f"**{n // 1024}K**", "", "| task | " + " | ".join(label(found, m) for m in models) + " |"]
        lines.append("| --- |" + " ---: |" * len(models))
        for task in tasks:
            row = [found.ruler[m]["scores"].get(str(n), {}).get("tasks", {}).get(task) for m in models]
            lines.append(f"| `{task}` | " + " | ".join(f"{s['score']:.1f}" if s else "-" for s in row) + " |")
    return lines


def scores_by_sample(found: Gathered, model: str) -> dict[tuple, float]:
    return {(s["task"], s["length"], s["index"]): s["score"] for s in found.ruler[model]["samples"]}


def paired_scores(ours: dict[tuple, float], theirs: dict[tuple, float]) -> dict[str, dict]:
    """ours minus theirs on the samples both scored: per length and ``beyond`` (every length past the
    trained one, pooled), as ``paired_difference`` (scores 0-1)."""
    shared = sorted(set(ours) & set(theirs), key=lambda k: (k[1], k[0], k[2]))
    groups = {str(n): [k for k in shared if k[1] == n] for n in sorted({k[1] for k in shared})}
    groups["beyond"] = [k for k in shared if k[1] > TRAINED_LENGTH]
    return {
        name: paired_difference([ours[k] for k in keys], [theirs[k] for k in keys])
        for name, keys in groups.items()
        if keys
    }


def paired(found: Gathered, a: str, b: str) -> dict[str, dict]:
    """a minus b on the samples both scored (``paired_scores``)."""
    check_same_samples(found.ruler[a]["samples"], found.ruler[b]["samples"], field=f"{a} minus {b}")
    return paired_scores(scores_by_sample(found, a), scores_by_sample(found, b))


def row_orders(found: Gathered, model: str) -> dict[int, str]:
    """model's evaluated trainings by the seed of their row order: ``{0: model, 1: "model-seed1", ...}``."""
    orders = {}
    for run in found.ruler:
        if first_seed(run) == model:
            seed = re.search(r"-seed(\d+)(?=-|$)", run)
            orders[int(seed.group(1)) if seed else 0] = run
    return orders


def seed_runs(found: Gathered, a: str, b: str) -> list[tuple[int, str, str]]:
    """(seed, a's run, b's run) for every row order both a and b were trained and evaluated on, their
    samples checked to be the same samples."""
    ours, theirs = row_orders(found, a), row_orders(found, b)
    common = [(seed, ours[seed], theirs[seed]) for seed in sorted(set(ours) & set(theirs))]
    runs = [run for _, x, y in common for run in (x, y)]
    for run in runs[1:]:
        check_same_samples(found.ruler[runs[0]]["samples"], found.ruler[run]["samples"], field=f"{runs[0]} and {run}")
    return common


def over_seeds(found: Gathered, a: str, b: str) -> tuple[list[str], dict[str, dict]] | None:
    """a minus b with each side's score per sample averaged over the row orders both were trained on
    (a's seed K against b's seed K): the modes' difference with the row order's share averaged out. The
    seeds used and the differences (``paired_scores``), or None under two common seeds. The interval is
    over samples: two trainings say little of the training-to-training spread (``over_trainings``)."""
    common = seed_runs(found, a, b)
    if len(common) < 2:
        return None

    def mean(names: list[str]) -> dict[tuple, float]:
        each = [scores_by_sample(found, n) for n in names]
        return {k: sum(e[k] for e in each) / len(each) for k in set.intersection(*(set(e) for e in each))}

    ours, theirs = mean([x for _, x, _ in common]), mean([y for _, _, y in common])
    return [str(seed) for seed, _, _ in common], paired_scores(ours, theirs)


def over_trainings(found: Gathered, a: str, b: str) -> dict[str, tuple[float, float, float, list[float]]] | None:
    """a minus b with each row order's paired difference one observation: per length and ``beyond``,
    the mean over the seeds both were trained on, its 95% t interval on n - 1 degrees of freedom (the
    training-to-training spread, which the per-sample intervals leave out) and each seed's difference,
    in points; None under two common seeds."""
    common = seed_runs(found, a, b)
    if len(common) < 2:
        return None
    each = [paired(found, x, y) for _, x, y in common]
    out = {}
    for column in each[0]:
        values = [100 * d[column]["difference"] for d in each if column in d]
        out[column] = (*mean_t_interval(values), values)
    return out


def other_modes(found: Gathered, reference: str) -> list[str]:
    """The trained modes other than ``reference``, each by its first row order."""
    return [m for m in models_of(found) if m != reference and first_seed(m) == m and m not in UNTRAINED]


def trainings_table(found: Gathered, reference: str = "anchor") -> list[str]:
    """reference minus each mode with the seeds as the unit (``over_trainings``); empty where no mode
    has two common seeds with it."""
    columns = [str(n) for n in lengths_of(found)] + ["beyond"]
    heads = [f"{int(c) // 1024}K" if c != "beyond" else f"beyond {TRAINED_LENGTH // 1024}K" for c in columns]
    lines = []
    for model in other_modes(found, reference):
        by = over_trainings(found, reference, model)
        if not by:
            continue
        if not lines:
            lines = ["| difference | " + " | ".join(heads) + " |", "| --- |" + " ---: |" * len(columns)]
        cells = [
            "-"
            if c not in by
            else f"{by[c][0]:+.2f} [{by[c][1]:+.1f}, {by[c][2]:+.1f}] ({', '.join(f'{v:+.2f}' for v in by[c][3])})"
            for c in columns
        ]
        lines.append(f"| {reference} minus {model}, {len(by[columns[-1]][3])} seeds | " + " | ".join(cells) + " |")
    return lines


def seeds_table(found: Gathered, reference: str = "anchor") -> list[str]:
    """reference minus each mode over the row orders both were trained on (``over_seeds``); empty
    where no mode has two."""
    rows = {}
    for model in other_modes(found, reference):
        pooled = over_seeds(found, reference, model)
        if pooled:
            rows[f"{reference} minus {model}, seeds {', '.join(pooled[0])}"] = pooled[1]
    return difference_rows(found, rows) if rows else []


def differences(found: Gathered, reference: str = "anchor") -> dict[str, dict[str, dict]]:
    """reference minus each other model of its row order (``paired``); another seed's runs are paired in
    the seed tables and by ``--minus``."""
    return {
        model: paired(found, reference, model)
        for model in models_of(found)
        if model != reference and (model in UNTRAINED or first_seed(model) == model)
    }


def seed_pairs(found: Gathered) -> list[tuple[str, str]]:
    """(MODE[-VARIANT], MODE-seedK[-VARIANT]) for every second row order whose first was evaluated
    too: the seed spread."""
    return [
        (first_seed(model), model)
        for model in models_of(found)
        if first_seed(model) != model and first_seed(model) in found.ruler
    ]


def difference_table(found: Gathered, reference: str = "anchor", more: Sequence[tuple[str, str]] = ()) -> list[str]:
    """reference minus each model (where reference was evaluated), then each (a, b) of ``more`` as a minus b
    (e.g. intra_doc_reset minus full)."""
    rows = {}
    if reference in found.ruler:
        rows = {f"{reference} minus {label(found, m)}": d for m, d in differences(found, reference).items()}
    for a, b in more:
        missing = [m for m in (a, b) if m not in found.ruler]
        if missing:
            raise UserError(f"--minus {a}:{b}: {', '.join(missing)} has no RULER results here")
        rows[f"{label(found, a)} minus {label(found, b)}"] = paired(found, a, b)
    if not rows:
        return [f"({reference} not evaluated: no paired differences)"]
    return difference_rows(found, rows)


def seed_table(found: Gathered) -> list[str]:
    """Each mode minus its second row order: how far two trainings of one recipe land apart (empty
    where no mode has two)."""
    pairs = seed_pairs(found)
    return difference_rows(found, {f"{a} minus {b}": paired(found, a, b) for a, b in pairs}) if pairs else []


def difference_rows(found: Gathered, table: dict[str, dict[str, dict]]) -> list[str]:
    columns = [str(n) for n in lengths_of(found)] + ["beyond"]
    heads = [f"{int(c) // 1024}K" if c != "beyond" else f"beyond {TRAINED_LENGTH // 1024}K" for c in columns]
    lines = ["| difference | " + " | ".join(heads) + " |", "| --- |" + " ---: |" * len(columns)]
    for name, by in table.items():
        row = []
        for c in columns:
            d = by.get(c)
            row.append(
                "-"
                if d is None
                else f"{100 * d['difference']:+.2f} [{100 * d['difference_low']:+.1f}, "
                f"{100 * d['difference_high']:+.1f}] {d['higher_a']}:{d['higher_b']} p={d['p_value']:.2g}"
            )
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return lines


def rows_digest(train: dict) -> str | None:
    """Which rows a mode trained on, in 8 hex digits: its train.json's ``rows`` (the data's fingerprint and
    packing, the number of rows, rows per step; run.py reads them from the checkpoint) without the seed,
    which only orders them. None where the run did not record them."""
    rows = train.get("rows")
    if not rows:
        return None
    same = {key: value for key, value in rows.items() if key != "seed"}
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()[:8]


def rows_line(found: Gathered) -> str | None:
    """Whether the trained modes shared their rows, from their records (None where none recorded them)."""
    groups: dict[str, list[str]] = {}
    unrecorded = []
    for mode in in_order(found.train):
        digest = rows_digest(found.train[mode])
        if digest:
            groups.setdefault(digest, []).append(mode)
        else:
            unrecorded.append(mode)
    if not groups:
        return None
    tail = f" ({', '.join(unrecorded)} did not record theirs)" if unrecorded else ""
    if len(groups) == 1:
        [(digest, modes)] = groups.items()
        return f"Rows: {', '.join(modes)} trained on the same rows (`{digest}`){tail}."
    shown = "; ".join(f"`{d}`: {', '.join(modes)}" for d, modes in groups.items())
    return f"Rows: the modes trained on different rows ({shown}){tail}: they do not compare."


def training_table(found: Gathered) -> list[str]:
    """A row per trained mode, with the card it trained on: train.json's ``device`` or, from runs that did not
    record it, the mode's RULER result's (run.py trains and evaluates a mode in one run, on one machine), and
    its rows (:func:`rows_digest`, with the seed of their order)."""
    lines = ["| mode | steps | tokens | tokens/s (median) | wall time | peak GiB | val/loss | card | rows |"]
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for mode in in_order(found.train):
        t = found.train[mode]
        card = t.get("device") or found.ruler.get(mode, {}).get("device", "?")
        rate = f"{t['tokens_per_sec_median']:,.0f}" if t.get("tokens_per_sec_median") else "-"
        peak = f"{t['peak_gib']:.1f}" if t.get("peak_gib") else "-"
        loss = f"{t['val_loss']:.3f}" if t.get("val_loss") is not None else "-"
        digest = rows_digest(t)
        rows = f"`{digest}`, seed {t['rows'].get('seed', '?')}" if digest else "-"
        lines.append(
            f"| {mode} | {t['steps']} | {t['tokens'] / 1e6:.1f}M | {rate} | {t['wall_seconds']:.0f} s | {peak} | {loss} "
            f"| {card} | {rows} |"
        )
    return lines


def during_training(found: Gathered) -> dict[str, dict]:
    """Per trained mode whose train.json holds the RULER callback's curves (``ruler/avg/LENGTH``, logged
    by callbacks/ruler.py): the length, the steps evaluated, each evaluation's average, the mean of the
    last five as logged (the paper's protocol) and the tasks."""
    table = {}
    for mode in in_order(found.train):
        curves = found.train[mode].get("curves", {})
        averages = sorted(k for k in curves if k.startswith("ruler/avg/"))
        if not averages:
            continue
        length = averages[-1].rsplit("/", 1)[1]
        points = curves[f"ruler/avg/{length}"]
        last5 = curves.get(f"ruler/avg_last5/{length}", [])
        tasks = sorted(k.split("/")[1] for k in curves if k.endswith(f"/{length}") and k.count("/") == 2)
        tasks = [t for t in tasks if t not in ("avg", "avg_last5")]
        table[mode] = {
            "length": int(length),
            "steps": [int(step) for step, _ in points],  # the optimizer steps done, as the callback logs them
            "scores": [score for _, score in points],
            "mean_last5": last5[-1][1] if last5 else None,
            "tasks": tasks,
        }
    return table


def during_training_table(found: Gathered) -> list[str]:
    lines = ["| mode | length | steps evaluated | each evaluation | mean of the last 5 | tasks |"]
    lines.append("| --- | ---: | --- | --- | ---: | --- |")
    for mode, row in during_training(found).items():
        mean = f"{row['mean_last5']:.2f}" if row["mean_last5"] is not None else "-"
        lines.append(
            f"| {mode} | {row['length'] // 1024}K | {', '.join(map(str, row['steps']))} | "
            f"{' / '.join(f'{s:.1f}' for s in row['scores'])} | {mean} | {', '.join(f'`{t}`' for t in row['tasks'])} |"
        )
    return lines


def paper_table() -> list[str]:
    lines = ["| the paper (LLaMA-2-7B) | full | intra_doc | intra_doc_reset | anchor |", "| --- |" + " ---: |" * 4]
    lines += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |" for name, values in PAPER.items()]
    return lines


def render(found: Gathered, more: Sequence[tuple[str, str]] = ()) -> str:
    """The tables in the paper's layout; with training results only (no model evaluated yet), the
    training and during-training tables. ``more``: further paired differences (a minus b)."""
    parts = ruler_parts(found, more) if found.ruler else []
    if found.train:
        parts += ["", "Training:", "", *training_table(found)]
        line = rows_line(found)
        parts += ["", line] if line else []
    if during_training(found):
        parts += [
            "",
            "RULER during training (the recipe's callback, a subset of tasks and samples at the trained length, "
            "every 10 steps over the last 50: the paper's protocol):",
            "",
            *during_training_table(found),
        ]
    parts += ["", "For scale, the paper's own setting:", "", *paper_table()]
    return "\n".join(parts).lstrip("\n") + "\n"


def section(title: str, table: list[str]) -> list[str]:
    """A titled table followed by a blank line, or nothing for an empty table."""
    return [title, "", *table, ""] if table else []


def ruler_parts(found: Gathered, more: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The evaluated models' averages, paired differences, seed spreads and per-task tables."""
    any_result = next(iter(found.ruler.values()))
    settings = any_result.get("settings", {})
    return [
        f"RULER average (0-100, [95% interval]), {any_result.get('average_name', 'RULER')}, "
        f"{settings.get('samples', '?')} samples per task and length:",
        "",
        *average_table(found),
        "",
        cards_line(found),
        "",
        "Paired differences on the same samples (points, [95% interval], samples each side scored higher on "
        "a:b, sign test):",
        "",
        *difference_table(found, more=more),
        "",
        *section(
            "Seed to seed (one recipe, another row order; points, [95% interval], samples higher a:b, sign test):",
            seed_table(found),
        ),
        *section(
            "Over the row orders (each mode's score per sample averaged over its seeds, then paired; the "
            "interval is over samples, not trainings):",
            seeds_table(found),
        ),
        *section(
            "Over trainings (each row order's paired difference one observation: the mean, its 95% t "
            "interval on seeds - 1 degrees of freedom, and each seed's difference):",
            trainings_table(found),
        ),
        "Per task:",
        *task_tables(found),
    ]


def figure(found: Gathered, path: Path, reference: str = "anchor") -> Path:
    """Two panels from the same numbers as the tables: each model's RULER average by length with its 95%
    interval, and ``reference`` minus each trained model on the same samples with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = lengths_of(found)
    table = differences(found, reference) if reference in found.ruler else {}
    trained = [m for m in table if m not in UNTRAINED]
    fig, axes = plt.subplots(1, 2 if trained else 1, figsize=(12 if trained else 6.5, 4.2), squeeze=False)
    left = axes[0][0]
    for model in models_of(found):
        points = [(n, found.ruler[model]["scores"].get(str(n), {}).get("average")) for n in lengths]
        points = [(n, a) for n, a in points if a]
        xs, ys = [n for n, _ in points], [a["score"] for _, a in points]
        spread = [[a["score"] - a["low"] for _, a in points], [a["high"] - a["score"] for _, a in points]]
        left.errorbar(xs, ys, yerr=spread, marker="o", capsize=3, label=label(found, model))
    left.axvline(TRAINED_LENGTH, color="grey", linestyle=":", linewidth=1)
    left.set(xscale="log", xlabel="length (tokens)", ylabel="RULER average (0-100)", ylim=(0, None))
    left.set_xticks(lengths, [f"{n // 1024}K" for n in lengths])
    left.set_xticks([], minor=True)
    left.legend(fontsize=8)
    left.set_title(found.ruler[models_of(found)[0]].get("average_name", "RULER"), fontsize=10)
    if trained:
        right = axes[0][1]
        for i, model in enumerate(trained):
            by = table[model]
            xs = [n * (1 + 0.04 * (i - (len(trained) - 1) / 2)) for n in lengths if str(n) in by]
            ds = [by[str(n)] for n in lengths if str(n) in by]
            ys = [100 * d["difference"] for d in ds]
            spread = [[100 * (d["difference"] - d["difference_low"]) for d in ds]]
            spread.append([100 * (d["difference_high"] - d["difference"]) for d in ds])
            right.errorbar(xs, ys, yerr=spread, marker="o", capsize=3, label=f"{reference} minus {model}")
        right.axhline(0, color="black", linewidth=0.8)
        right.axvline(TRAINED_LENGTH, color="grey", linestyle=":", linewidth=1)
        right.set(xscale="log", xlabel="length (tokens)", ylabel="points, same samples (95% interval)")
        right.set_xticks(lengths, [f"{n // 1024}K" for n in lengths])
        right.set_xticks([], minor=True)
        right.legend(fontsize=8)
        right.set_title(f"{reference} minus each trained mode", fontsize=10)
    write_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="run.py's WORK/results folders")
    parser.add_argument(
        "--result", nargs="+", default=[], metavar="MODEL=RULER_JSON", help="one ruler.json as MODEL's results"
    )
    parser.add_argument(
        "--minus",
        nargs="+",
        default=[],
        metavar="A:B",
        help="more paired differences, A minus B (e.g. intra_doc_reset:full)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here (default: print it)")
    parser.add_argument("--figure", type=Path, default=None, help="draw the averages and differences into this PNG")
    args = parser.parse_args(argv)
    files = []
    for pair in args.result:
        model, sep, path = pair.partition("=")
        if not sep or not model or not Path(path).is_file():
            parser.error(f"--result {pair!r}: give MODEL=PATH of an existing ruler.json")
        files.append((model, Path(path)))
    try:
        found = gather(args.results, files)
    except UserError as error:
        parser.error(str(error))
    if not found.ruler and not found.train:
        parser.error("no MODEL/ruler/ruler.json or MODEL/train.json under the folders given")
    if args.figure is not None and not found.ruler:
        parser.error("--figure draws RULER results: no MODEL/ruler/ruler.json under the folders given")
    more = [tuple(pair.split(":")) for pair in args.minus]
    if any(len(pair) != 2 or not all(pair) for pair in more):
        parser.error(f"--minus {' '.join(args.minus)}: give each pair as A:B, two model names")
    try:
        text = render(found, more)
        if args.figure is not None:
            figure(found, args.figure)
    except UserError as error:
        parser.error(str(error))
    if args.out is None:
        print(text, end="")
    else:
        atomic_write(args.out, text)
    return text


if __name__ == "__main__":
    main()
