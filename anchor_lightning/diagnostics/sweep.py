"""The paper's sweeps (section 2) over offsets, sequence lengths and precisions, on real text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from anchor_lightning.diagnostics.rope_precision import measure
from anchor_lightning.messages import Count

PAPER_OFFSETS = (0, 2, 4, 6, 8, 10, 12, 14, 15, 17, 18, 20, 22, 50, 100, 200, 500, 1000, 2000)
PER_TOKEN_SHOWN = 64  # key columns kept in the per-token output


@dataclass
class SweepSettings:
    lengths: tuple[int, ...] = (64, 256, 1024, 4096, 16384)
    offsets: tuple[int, ...] = PAPER_OFFSETS
    b: int = 16
    offset_length: int = 4096  # the sequence length of the offset sweep (the paper's 4,096)
    sequences: int = 4  # sequences averaged per point (the paper: 50)
    dtypes: tuple[str, ...] = ("bfloat16", "float32")


def text_windows(documents: Sequence[np.ndarray], length: int, count: int, first_token: int) -> list[torch.Tensor]:
    """``count`` sequences of ``length`` tokens: the first token, then consecutive text of the corpus
    (documents joined end to end), each window starting where the previous one ended."""
    stream = np.concatenate([np.asarray(d, dtype=np.int64) for d in documents])
    need = count * (length - 1)
    if len(stream) < need:
        stream = np.tile(stream, -(-need // len(stream)))
    return [
        torch.from_numpy(np.concatenate([[first_token], stream[k * (length - 1) : (k + 1) * (length - 1)]]))
        for k in range(count)
    ]


def run_sweep(
    model_for: Callable[[str], torch.nn.Module],
    documents: Sequence[np.ndarray],
    first_token: int,
    settings: SweepSettings,
    progress: bool = True,
) -> dict:
    """All measurements, averaged over ``settings.sequences`` text windows per point."""
    offset_length = min(settings.offset_length, max(settings.lengths))
    jobs = len(settings.dtypes) * (len(settings.offsets) + 2 * len(settings.lengths))
    bar = Count(jobs * settings.sequences, "RoPE deviation", "pass", bar=progress)
    results: dict = {"settings": asdict(settings), "first_token": first_token}
    offset_sweep = {"length": offset_length, "b": settings.b, "a": list(settings.offsets)}
    length_sweep = {"lengths": list(settings.lengths), "a": 0, "b": settings.b}
    anchor_rule = {"lengths": list(settings.lengths), "a": 0, "b": settings.b}
    per_token: dict[str, object] = {"length": offset_length, "a": 0, "b": settings.b}

    def mean_over_windows(model, length: int, a: int, anchor: bool):
        records = []
        for window in text_windows(documents, length, settings.sequences, first_token):
            records.append(measure(model, window, a, settings.b, anchor=anchor))
            bar.update(1)
        return records

    for dtype in settings.dtypes:
        model = model_for(dtype)
        offsets_d = []
        for a in settings.offsets:
            offsets_d.append(float(np.mean([r.d for r, _ in mean_over_windows(model, offset_length, a, False)])))
        offset_sweep[dtype] = {"D": offsets_d}
        plain: dict[str, list[float]] = {"D": [], "D_content": [], "D_logit": [], "first_token_share": []}
        anchored: dict[str, list[float]] = {"first_token_kv_max_diff": [], "first_token_hidden_max_diff": []}
        for length in settings.lengths:
            runs = mean_over_windows(model, length, 0, False)
            plain["D"].append(float(np.mean([r.d for r, _ in runs])))
            plain["D_content"].append(float(np.mean([r.d_content for r, _ in runs])))
            plain["D_logit"].append(float(np.mean([r.d_logit for r, _ in runs])))
            plain["first_token_share"].append(
                float(np.mean([r.per_token[0].item() / r.d for r, _ in runs if r.d > 0] or [0.0]))
            )
            if length == offset_length:
                per_token[dtype] = torch.stack([r.per_token[:PER_TOKEN_SHOWN] for r, _ in runs]).mean(0).tolist()
            # the anchor rule: the first token stays at 0 and only the content moves. Its K, V and hidden
            # states must not change. (Attention values are not compared: the content's distance to the
            # anchor changes by b - a, so they differ in exact arithmetic too.)
            runs = mean_over_windows(model, length, 0, True)
            anchored["first_token_kv_max_diff"].append(max(r.first_kv_diff for r, _ in runs))
            anchored["first_token_hidden_max_diff"].append(max(h for _, h in runs))
        length_sweep[dtype], anchor_rule[dtype] = plain, anchored
        del model
    bar.close()
    results.update(offset_sweep=offset_sweep, length_sweep=length_sweep, anchor_rule=anchor_rule, per_token=per_token)
    return results


def summary(results: dict) -> str:
    """A few lines a person reads at a glance."""
    lines = []
    lengths = results["length_sweep"]["lengths"]
    dtypes = [d for d in results["settings"]["dtypes"] if d in results["length_sweep"]]
    for dtype in dtypes:
        sweep = results["length_sweep"][dtype]
        for head, key, spec in (
            (f"{dtype:>9}: D(a=0, b={results['length_sweep']['b']}) by length", "D", ".3g"),
            (f"{'':>9}  first token's share of D:", "first_token_share", ".0%"),
            (f"{'':>9}  D over content-to-content entries:", "D_content", ".3g"),
        ):
            lines.append(f"{head} " + ", ".join(f"{n}: {value:{spec}}" for n, value in zip(lengths, sweep[key])))
        anchored = results["anchor_rule"][dtype]
        lines.append(
            f"{'':>9}  anchor rule: first token's K/V differ by at most {max(anchored['first_token_kv_max_diff']):.3g}, "
            f"its hidden states by {max(anchored['first_token_hidden_max_diff']):.3g}"
        )
    if {"bfloat16", "float32"} <= set(dtypes):
        ratios = [
            b / f if f > 0 else float("inf")
            for b, f in zip(results["length_sweep"]["bfloat16"]["D"], results["length_sweep"]["float32"]["D"])
        ]
        lines.append("D bf16 / fp32: " + ", ".join(f"{n}: {r:.3g}" for n, r in zip(lengths, ratios)))
    return "\n".join(lines)
