"""Print the last logged value (and the median of the last N) of a run's TensorBoard scalars.

python scripts/summarize_run.py runs/llama-1b-64k-anchor [--tags perf/tokens_per_sec memory/peak_gib]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

DEFAULT_TAGS = ["train/loss", "perf/tokens_per_sec", "perf/tokens_per_sec_per_device", "perf/mfu", "memory/peak_gib"]


def scalars(log_dir: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log_dir")
    parser.add_argument("--tags", nargs="*", default=DEFAULT_TAGS)
    parser.add_argument("--last", type=int, default=3, help="median over the last N values")
    args = parser.parse_args()
    values = scalars(Path(args.log_dir))
    for tag in args.tags:
        if tag in values:
            tail = values[tag][-args.last :]
            print(
                f"{args.log_dir}  {tag:32s} last {values[tag][-1]:.4g}  median(last {len(tail)}) {statistics.median(tail):.4g}"
            )


if __name__ == "__main__":
    main()
