"""Tables and plots of the miniature from ``lab/miniature/run.py``'s results.

    python lab/miniature/report.py RESULTS_DIR [RESULTS_DIR ...] [--doc docs/miniature.md]
        [--raw docs/miniature] [--with EARLIER_RESULTS_DIR ...]

A RESULTS_DIR (several when one run's models came back from several GPU calls) holds one folder per
model (``base``, ``base-theta``, ``anchor``, ``full``, ``intra_doc``, ``intra_doc_reset``) with
``long_context.json``, ``diagnose/rope_deviation.json`` and, for trained modes, ``train.json``; plus
``environment.json``. Writes the figures to ``docs/figures/miniature-*.png``,
copies the raw JSON to ``--raw``, and replaces the text between ``<!-- results:begin -->`` and
``<!-- results:end -->`` in ``--doc`` with the tables (everything else in the page is left as is).
Models that have no results yet are left out of the tables; ``--with`` fills them in from an earlier
session's raw JSON (``sources.json`` in ``--raw`` says which).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from anchor_lightning.diagnostics.plots import save_figure  # noqa: E402
from anchor_lightning.eval.stats import paired_comparison, wilson_interval  # noqa: E402
from anchor_lightning.paths import atomic_write, write_figure  # noqa: E402

MODELS = ("base", "base-theta", "anchor", "intra_doc_reset", "intra_doc", "full")
LABELS = {
    "base": "base (RoPE 100K)",
    "base-theta": "base, RoPE 2.24M, untrained",
    "anchor": "anchor",
    "intra_doc_reset": "intra_doc_reset",
    "intra_doc": "intra_doc",
    "full": "full",
}
SHORT = {
    "base": "base",
    "base-theta": "base, new RoPE",
    "anchor": "anchor",
    "intra_doc_reset": "reset",
    "intra_doc": "intra_doc",
    "full": "full",
}
COLORS = {
    "base": "0.5",
    "base-theta": "0.75",
    "anchor": "tab:red",
    "intra_doc_reset": "tab:green",
    "intra_doc": "tab:blue",
    "full": "tab:purple",
}
TRAINED = ("anchor", "intra_doc_reset", "intra_doc", "full")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def result_files(folder: Path) -> dict[str, Path]:
    """One model's result files in ``folder`` by kind: run.py's layout (``diagnose/rope_deviation.json``)
    or the raw folder's (``rope_deviation.json``)."""
    files = {}
    for key, paths in (
        ("eval", [folder / "long_context.json"]),
        ("train", [folder / "train.json"]),
        ("diag", [folder / "diagnose" / "rope_deviation.json", folder / "rope_deviation.json"]),
    ):
        path = next((p for p in paths if p.is_file()), None)
        if path is not None:
            files[key] = path
    return files


def load(results: Path) -> dict:
    found = {}
    for name in MODELS:
        entry = {key: json.loads(path.read_text()) for key, path in result_files(results / name).items()}
        if entry:
            found[name] = entry
    return found


def combine(folders: list[Path]) -> tuple[dict, dict[str, Path]]:
    """One run's results spread over several folders (one per GPU call): each model wholly from the
    first folder that has it. Returns the results and the folder each model came from."""
    found: dict = {}
    origin: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"{folder}: no such results folder")
        for name, entry in load(folder).items():
            if name in found:
                print(f"{name}: taken from {origin[name]}, not from {folder}")
                continue
            found[name], origin[name] = entry, folder
    return found, origin


def run_environment(folders: list[Path]) -> dict:
    """The folders' ``environment.json`` (one versions line for the tables): they must agree."""
    environments = [
        json.loads((f / "environment.json").read_text()) for f in folders if (f / "environment.json").is_file()
    ]
    if any(e != environments[0] for e in environments[1:]):
        raise SystemExit(
            "the results folders ran with different versions or cards (environment.json): report them apart"
        )
    return environments[0] if environments else {}


def run_state(folders: list[Path]) -> dict:
    """The folders' ``state.json`` merged: every step done, with its seconds, in the order of the folders."""
    state: dict = {}
    for folder in folders:
        if (folder / "state.json").is_file():
            for key, value in json.loads((folder / "state.json").read_text()).items():
                if isinstance(value, dict):
                    state.setdefault(key, {}).update(value)
    return state


def keep_raw(origin: dict[str, Path], folders: list[Path], raw: Path, environment: dict) -> None:
    """Copy each model's raw JSON from the folder it came from into ``raw`` (``raw`` itself may be one
    of the folders: a later call's models added to an earlier call's), with the folders' environment
    and merged state."""
    for name, folder in origin.items():
        if folder.resolve() == raw.resolve():
            continue
        for source in result_files(folder / name).values():
            target = raw / name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    raw.mkdir(parents=True, exist_ok=True)
    if environment:
        atomic_write(raw / "environment.json", json.dumps(environment, indent=1))
    state = run_state(folders)
    if state:
        atomic_write(raw / "state.json", json.dumps(state, indent=1))


def evaluation_settings(evaluation: dict) -> tuple:
    """What makes two evaluations comparable in one table: the needle tasks' version and lengths."""
    lengths = {n for task in evaluation.get("niah", {}).values() for n in task.get("by_length", {})}
    return evaluation.get("niah_version"), tuple(sorted(lengths, key=int))


def merge(found: dict, earlier: dict, where: str, sources: dict) -> None:
    """Fill in from ``earlier`` (another results folder) what ``found`` lacks: for the untrained base
    models, per kind of result (the same weights in every session: for example the base model
    evaluated in an earlier session, with the same code); a trained mode only whole, when ``found``
    has nothing of it (its training, evaluation and diagnostic must come from one trained model). An
    evaluation of other needle tasks or lengths than ``found``'s is left out, so that one table never
    mixes them. ``sources`` records where each filled-in result came from."""
    settings = {evaluation_settings(e["eval"]) for e in found.values() if "eval" in e}
    for name, entry in earlier.items():
        if name in TRAINED and name in found:
            continue
        for key, value in entry.items():
            if key in found.get(name, {}):
                continue
            if key == "eval" and settings and evaluation_settings(value) not in settings:
                version, lengths = evaluation_settings(value)
                print(f"not taking {name}'s evaluation from {where}: needle tasks v{version} at {list(lengths)}")
                continue
            found.setdefault(name, {})[key] = value
            sources.setdefault(name, {})[key] = where


def k_label(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 else str(n)


def cell(accuracy: float, low: float, high: float) -> str:
    return f"{accuracy:.0%} [{low:.0%}, {high:.0%}]"


def number(value, spec: str) -> str:
    """``value`` formatted, or "-" where the run logged none (a CPU dry run has no GPU counters)."""
    return "-" if value is None else format(value, spec)


def training_table(found: dict) -> list[str]:
    rows = [(m, found[m]["train"]) for m in TRAINED if m in found and "train" in found[m]]
    if not rows:
        return []
    full = dict(rows).get("full")
    lines = [
        "| mode | steps | tokens | tokens/s (median) | s/step (median) | step time / full | wall time | peak GiB | "
        "last train loss | val/loss |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, t in rows:
        losses = [v for _, v in t["curves"].get("train/loss", [])]
        ratio = (
            f"{t['seconds_per_step_median'] / full['seconds_per_step_median']:.2f}x"
            if full and full.get("seconds_per_step_median") and t.get("seconds_per_step_median")
            else ""
        )
        lines.append(
            f"| {mode} | {t['steps']} | {t['tokens'] / 1e6:.1f}M | {number(t['tokens_per_sec_median'], ',.0f')} | "
            f"{number(t['seconds_per_step_median'], '.2f')} | {ratio} | {t['wall_seconds']:.0f} s | "
            f"{number(t['peak_gib'], '.1f')} | {number(np.mean(losses[-3:]) if losses else None, '.3f')} | "
            f"{number(t['val_loss'], '.3f')} |"
        )
    return lines


def niah_tables(found: dict) -> list[str]:
    evaluated = [m for m in MODELS if m in found and "eval" in found[m]]
    if not evaluated:
        return []
    lines = []
    tasks = list(found[evaluated[0]]["eval"]["niah"])
    for task in tasks:
        lengths = list(found[evaluated[0]]["eval"]["niah"][task]["by_length"])
        trials = found[evaluated[0]]["eval"]["niah"][task]["by_length"][lengths[0]]["trials"]
        chance = found[evaluated[0]]["eval"]["niah"][task]["chance"]
        lines += [
            "",
            f"**{task}** ({trials} trials per length, chance {chance:.0%}; accuracy [95% Wilson interval])",
            "",
            "| model | " + " | ".join(k_label(int(n)) for n in lengths) + " |",
            "| --- |" + " ---: |" * len(lengths),
        ]
        for m in evaluated:
            by_length = found[m]["eval"]["niah"][task]["by_length"]
            lines.append(
                f"| {LABELS[m]} | "
                + " | ".join(cell(by_length[n]["accuracy"], by_length[n]["low"], by_length[n]["high"]) for n in lengths)
                + " |"
            )
    return lines


def pooled_beyond(entry: dict, above: int) -> tuple[list[bool], list[str]]:
    """Every trial's outcome at lengths above ``above``, over all tasks, in a fixed order."""
    hits, keys = [], []
    for task, r in entry["eval"]["niah"].items():
        for i, (hit, n) in enumerate(zip(r["hits"], r["trial_lengths"])):
            if n > above:
                hits.append(hit)
                keys.append(f"{task}/{i}")
    return hits, keys


def paired_table(found: dict, above: int = 8192) -> list[str]:
    if "anchor" not in found or "eval" not in found["anchor"]:
        return []
    anchor, keys = pooled_beyond(found["anchor"], above)
    lines = [
        "| anchor vs | anchor accuracy | other accuracy | difference [95%] | anchor only right | other only right | "
        "McNemar p |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for other in ("intra_doc_reset", "intra_doc", "full", "base-theta", "base"):
        if other not in found or "eval" not in found[other]:
            continue
        hits, other_keys = pooled_beyond(found[other], above)
        if other_keys != keys:
            continue
        c = paired_comparison(anchor, hits)
        a_low, a_high = wilson_interval(sum(anchor), len(anchor))
        o_low, o_high = wilson_interval(sum(hits), len(hits))
        lines.append(
            f"| {LABELS[other]} | {cell(np.mean(anchor), a_low, a_high)} | {cell(np.mean(hits), o_low, o_high)} | "
            f"{c['difference']:+.1%} [{c['difference_low']:+.1%}, {c['difference_high']:+.1%}] | "
            f"{c['only_a']} | {c['only_b']} | {c['p_value']:.3g} |"
        )
    return [
        f"Paired over the same {len(anchor)} trials beyond {k_label(above)} (16K and 32K, all three tasks):",
        "",
        *lines,
    ]


def perplexity_table(found: dict) -> list[str]:
    evaluated = [m for m in MODELS if m in found and "perplexity_by_position" in found[m].get("eval", {})]
    if not evaluated:
        return []
    buckets = found[evaluated[0]]["eval"]["perplexity_by_position"]
    documents = buckets[0]["documents"]
    lines = [
        f"Perplexity by target position on {documents} held-out documents of at least 32K tokens "
        "(token-weighted; [95% interval over documents] for the last bucket), and short-context perplexity "
        "(WikiText-2 validation, the first 2,048 tokens of each article):",
        "",
        "| model | "
        + " | ".join(f"{k_label(b['start'])}-{k_label(b['end'])}" for b in buckets)
        + " | short-context ppl |",
        "| --- |" + " ---: |" * (len(buckets) + 1),
    ]
    for m in evaluated:
        row = found[m]["eval"]["perplexity_by_position"]
        cells = [f"{b['ppl']:.2f}" for b in row[:-1]] + [
            f"{row[-1]['ppl']:.2f} [{row[-1]['ppl_low']:.2f}, {row[-1]['ppl_high']:.2f}]"
        ]
        short = found[m]["eval"].get("short_perplexity")
        cells.append(f"{short['ppl']:.2f} [{short['ppl_low']:.2f}, {short['ppl_high']:.2f}]" if short else "")
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    return lines


def column_ratio(per_token: list[float], of=np.median) -> float:
    """Column 0's D_j over ``of`` the other shown columns (the median; ``max``: how far the first token
    stands apart from every other)."""
    rest = of(per_token[1:])
    return per_token[0] / rest if rest > 0 else float("inf")


def diagnostic_table(found: dict) -> list[str]:
    evaluated = [m for m in MODELS if m in found and "diag" in found[m]]
    if not evaluated:
        return []
    lengths = found[evaluated[0]]["diag"]["length_sweep"]["lengths"]
    per_len = " / ".join(k_label(n) for n in lengths)
    lines = [
        f"| model | D bf16 ({per_len}) | D fp32 | first token's share of D (bf16) | column 0 / median column (bf16, "
        f"L = {k_label(found[evaluated[0]]['diag']['per_token']['length'])}) | column 0 / largest other column | "
        "anchor rule: K/V, hidden max diff |",
        "| --- | --- | --- | --- | ---: | ---: | --- |",
    ]
    for m in evaluated:
        d = found[m]["diag"]
        bf, fp = d["length_sweep"]["bfloat16"], d["length_sweep"].get("float32")
        rule = d["anchor_rule"]["bfloat16"]
        lines.append(
            f"| {LABELS[m]} | {' / '.join(f'{x:.1f}' for x in bf['D'])} | "
            f"{' / '.join(f'{x:.3f}' for x in fp['D']) if fp else ''} | {' / '.join(f'{x:.1%}' for x in bf['first_token_share'])} | "
            f"{column_ratio(d['per_token']['bfloat16']):.0f}x | {column_ratio(d['per_token']['bfloat16'], of=max):.1f}x | "
            f"{max(rule['first_token_kv_max_diff']):.3g}, "
            f"{max(rule['first_token_hidden_max_diff']):.3g} |"
        )
    return lines


def plots(found: dict, figures: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures.mkdir(parents=True, exist_ok=True)
    paths = []
    evaluated = [m for m in MODELS if m in found and "perplexity_by_position" in found[m].get("eval", {})]
    if evaluated:
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for m in evaluated:
            buckets = found[m]["eval"]["perplexity_by_position"]
            x = [np.sqrt(max(b["start"], 1) * b["end"]) for b in buckets]
            ax.plot(x, [b["ppl"] for b in buckets], "o-", ms=3, color=COLORS[m], label=LABELS[m])
            ax.fill_between(
                x, [b["ppl_low"] for b in buckets], [b["ppl_high"] for b in buckets], color=COLORS[m], alpha=0.12
            )
        ax.axvline(8192, color="k", ls=":", lw=1)
        ax.text(8192, ax.get_ylim()[1], " 8K: pre-training length", va="top", fontsize=8)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="target position (bucket centre)",
            ylabel="perplexity",
            title="Perplexity by position, held-out documents >= 32K tokens",
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, figures / "miniature-ppl-by-position.png"))
    evaluated = [m for m in MODELS if m in found and "eval" in found[m]]
    if evaluated:
        tasks = list(found[evaluated[0]]["eval"]["niah"])
        fig, axes = plt.subplots(
            len(evaluated),
            len(tasks),
            figsize=(3.6 * len(tasks), 2.3 * len(evaluated)),
            squeeze=False,
            layout="constrained",  # titles clear of the row above's tick labels
        )
        for row, m in zip(axes, evaluated):
            for ax, task in zip(row, tasks):
                r = found[m]["eval"]["niah"][task]
                image = ax.imshow(r["grid"], vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
                ax.set_xticks(range(len(r["lengths"])), [k_label(n) for n in r["lengths"]], fontsize=7)
                ax.set_yticks(range(len(r["depths"])), [f"{d:.0%}" for d in r["depths"]], fontsize=7)
                ax.set_title(f"{SHORT[m]}: {task} {r['accuracy']:.0%}", fontsize=8)
                for (i, j), value in np.ndenumerate(np.asarray(r["grid"])):
                    ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=6)
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="accuracy (rows: needle depth)")
        write_figure(fig, figures / "miniature-niah.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(figures / "miniature-niah.png")
    trained = [m for m in TRAINED if m in found and "train" in found[m]]
    if trained:
        fig, ax = plt.subplots(figsize=(7, 4))
        for m in trained:
            curve = found[m]["train"]["curves"].get("train/loss", [])
            ax.plot([s for s, _ in curve], [v for _, v in curve], "o-", ms=2, color=COLORS[m], label=m)
        ax.set(xlabel="optimizer step", ylabel="train/loss (nats)", title="Training loss, same rows in every mode")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, figures / "miniature-train-loss.png"))
    diagnosed = [m for m in MODELS if m in found and "diag" in found[m]]
    if diagnosed:
        fig, ax = plt.subplots(figsize=(10, 4))
        for m in diagnosed:
            values = found[m]["diag"]["per_token"]["bfloat16"]
            ax.plot(
                range(len(values)),
                values,
                "o-",
                ms=2,
                color=COLORS[m],
                label=f"{LABELS[m]} (col 0: {column_ratio(values):.0f}x median)",
            )
        base = found.get("base", {}).get("diag")
        if base and "float32" in base["per_token"]:
            ax.plot(
                range(len(base["per_token"]["float32"])),
                base["per_token"]["float32"],
                "--",
                color="k",
                lw=1,
                label="base, fp32",
            )
        ax.set(
            yscale="log",
            xlabel="key column j",
            ylabel="D_j (bf16)",
            title=f"Per-column deviation, L = {found[diagnosed[0]]['diag']['per_token']['length']}",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the curves, not on them
        paths.append(save_figure(fig, figures / "miniature-per-column.png"))
    return paths


def _by_source(by_kind: dict) -> dict:
    out: dict = {}
    for kind, where in by_kind.items():
        out.setdefault(where, []).append(kind)
    return out


def tables(found: dict, environment: dict, sources: dict | None = None) -> str:
    taken = "; ".join(
        f"{name} ({', '.join(sorted(kinds))}) from `{where}`"
        for name, by_kind in (sources or {}).items()
        for where, kinds in _by_source(by_kind).items()
    )
    sections = [
        f"Card: {environment.get('device', '?')}; torch {environment.get('torch')}, transformers {environment.get('transformers')}, "
        f"lightning {environment.get('lightning')}, liger-kernel {environment.get('liger_kernel')}. "
        "Generated by `lab/miniature/report.py` from `docs/miniature/` (raw JSON)"
        + (f"; taken from earlier sessions' raw JSON: {taken}." if taken else "."),
        "",
        "### Training",
        "",
        *training_table(found),
        "",
        "### Needle retrieval",
        *niah_tables(found),
        "",
        *paired_table(found),
        "",
        "### Perplexity",
        "",
        *perplexity_table(found),
        "",
        "### The diagnostic",
        "",
        *diagnostic_table(found),
    ]
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "results",
        type=Path,
        nargs="+",
        help="this run's results folders (for example one per `gpu_call.sh one MODEL` call): each model from "
        "the first that has it, all copied to --raw",
    )
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "miniature.md")
    parser.add_argument("--raw", type=Path, default=ROOT / "docs" / "miniature")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument(
        "--with",
        dest="earlier",
        type=Path,
        action="append",
        default=[],
        help="another results folder (an earlier session's raw JSON) for what RESULTS lacks; repeatable, "
        "the first that has a result gives it; recorded in --raw/sources.json",
    )
    args = parser.parse_args(argv)
    found, origin = combine(args.results)
    sources: dict = {}
    for earlier in args.earlier:
        merge(found, load(earlier), str(earlier), sources)
    environment = run_environment(args.results)
    keep_raw(origin, args.results, args.raw, environment)
    if sources:
        args.raw.mkdir(parents=True, exist_ok=True)
        atomic_write(args.raw / "sources.json", json.dumps(sources, indent=1) + "\n")
    paths = plots(found, args.figures)
    block = tables(found, environment, sources)
    text = args.doc.read_text() if args.doc.is_file() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{args.doc}: no {BEGIN} ... {END} block to fill")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write(args.doc, f"{head}{BEGIN}\n{block}\n{END}{tail}")
    print(block)
    print(f"wrote {args.doc} and {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
