"""Print the last logged value (and the median of the last N) of a run's TensorBoard scalars.

python scripts/summarize_run.py runs/llama-1b-64k-anchor [--tags perf/tokens_per_sec memory/peak_gib]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from anchor_lightning.loggers import read_scalars  # noqa: E402

DEFAULT_TAGS = [
    "train/loss",
    "val/loss",
    "perf/tokens_per_sec",
    "perf/tokens_per_sec_per_device",
    "perf/mfu",
    "memory/peak_gib",
]


def stop(message: str) -> None:
    """Bad input: one line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log_dir")
    parser.add_argument("--tags", nargs="*", default=DEFAULT_TAGS)
    parser.add_argument("--last", type=int, default=3, help="median over the last N values")
    args = parser.parse_args()
    if not Path(args.log_dir).is_dir():
        stop(f"{args.log_dir}: no such directory")
    values = {tag: [v for _, v, _ in points] for tag, points in read_scalars(args.log_dir).items()}
    if not values:
        stop(f"{args.log_dir}: no TensorBoard scalars under it (a run's log directory holds events files)")
    for tag in args.tags:
        if tag in values:
            tail = values[tag][-args.last :]
            print(
                f"{args.log_dir}  {tag:32s} last {values[tag][-1]:.4g}  median(last {len(tail)}) {statistics.median(tail):.4g}"
            )
    missing = [tag for tag in args.tags if tag not in values]
    if missing:  # e.g. perf/mfu on a CPU, which has no known peak
        print(f"{args.log_dir}  not logged: {', '.join(missing)}")


if __name__ == "__main__":
    main()
