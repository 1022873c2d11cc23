"""PNG figures of a sweep (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from anchor_lightning.paths import write_figure  # noqa: E402

COLORS = {"bfloat16": "tab:red", "float32": "tab:blue"}


def plot_sweep(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    dtypes = [d for d in results["settings"]["dtypes"] if d in results["length_sweep"]]
    paths = []

    fig, ax = plt.subplots(figsize=(6.4, 4))
    sweep = results["offset_sweep"]
    for dtype in dtypes:
        ax.plot(sweep["a"], sweep[dtype]["D"], "o-", color=COLORS.get(dtype), label=dtype)
    ax.set(
        xscale="symlog",
        yscale="log",
        xlabel=f"offset a (b = {sweep['b']})",
        ylabel="D(X, a, b)",
        title=f"Attention deviation under a position shift, L = {sweep['length']}",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(save_figure(fig, out / "offset_sweep.png"))

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    lengths = results["length_sweep"]["lengths"]
    for dtype in dtypes:
        color = COLORS.get(dtype)
        left.plot(lengths, results["length_sweep"][dtype]["D"], "o-", color=color, label=f"{dtype}")
        left.plot(
            lengths,
            results["length_sweep"][dtype]["D_content"],
            "s--",
            color=color,
            label=f"{dtype}, content-to-content",
        )
        right.plot(lengths, results["length_sweep"][dtype]["D_logit"], "o-", color=color, label=dtype)
    for ax, ylabel, title in (
        (left, "D(X, 0, 16)", "D(X, 0, 16) by sequence length"),
        (right, "D_logit (first key)", "First-key logit deviation"),
    ):
        ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "length_sweep.png"))

    fig, ax = plt.subplots(figsize=(6.4, 4))
    per_token = results["per_token"]
    for dtype in dtypes:
        values = per_token[dtype]
        share = values[0] / sum(values) if sum(values) else 0.0
        ax.plot(
            range(len(values)),
            values,
            "o-",
            ms=3,
            color=COLORS.get(dtype),
            label=f"{dtype} (token 0: {share:.0%} of shown)",
        )
    ax.set(
        yscale="log",
        xlabel="key position j",
        ylabel="D_j (summed over layers, heads, queries)",
        title=f"Per-token deviation D_j, L = {per_token['length']} (first {len(values)} key columns)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "per_token.png"))
    return paths


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG (tight layout, 120 dpi) and close it."""
    fig.tight_layout()
    write_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
