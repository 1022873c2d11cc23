"""Compare StepTrace records of runs step by step: the rows read by all ranks and the step loss.

    python scripts/compare_traces.py REFERENCE_DIR OTHER_DIR [OTHER_DIR ...] [--rtol 0.01]

Prints one line per step (row-set hash and loss of each run) and exits 1 on a mismatch: rows that
differ, a loss outside ``--rtol``, or a step of the reference that another run lacks. A directory with
no trace at all stops with one line and exit status 2 (nothing compared is never a match).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def stop(message: str) -> None:
    """Bad input: one line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def steps(directory: Path) -> dict[int, tuple[str, float]]:
    """step -> (hash of the distinct rows of all ranks, sorted, loss); the ranks of a sequence-parallel
    group read the same rows."""
    records: dict[int, list[dict]] = {}
    files = sorted(Path(directory).glob("trace-rank*.jsonl"))
    if not files:
        stop(f"{directory}: no trace-rank*.jsonl (StepTrace writes them: callbacks/trace.py)")
    for path in files:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            records.setdefault(record["step"], []).append(record)
    out = {}
    for step, group in records.items():
        rows = sorted({r for record in group for r in record["rows"]})
        out[step] = (hashlib.sha1(",".join(map(str, rows)).encode()).hexdigest()[:12], group[0]["loss"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("reference")
    parser.add_argument("others", nargs="+")
    parser.add_argument("--rtol", type=float, default=0.01)
    args = parser.parse_args()
    reference = steps(Path(args.reference))
    others = [steps(Path(o)) for o in args.others]
    ok = True
    print(f"{'step':>4}  {'reference':>24}  " + "  ".join(f"{Path(o).name:>34}" for o in args.others))
    for step in sorted(reference):
        ref_hash, ref_loss = reference[step]
        cells = []
        for other in others:
            if step not in other:  # a step the reference took and this run did not
                ok = False
                cells.append(f"{'missing !':>34}")
                continue
            row_hash, loss = other[step]
            rel = abs(loss - ref_loss) / abs(ref_loss)
            same = row_hash == ref_hash and rel <= args.rtol
            ok &= same
            cells.append(f"{row_hash} {loss:.5f} ({rel:.1e}){'' if same else ' !'}")
        print(f"{step:4d}  {ref_hash} {ref_loss:11.5f}  " + "  ".join(cells))
    print("MATCH" if ok else "MISMATCH", f"(every step of the reference: rows equal and loss within rtol {args.rtol})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
