"""File a GPU call's result bundle into docs/: each model's raw RULER result, training summary, card and log.

    python lab/miniature/file_bundle.py FILES_AT DEST [--replace]

FILES_AT is the folder a ``gpu_call.sh`` call's files came back to (``miniature-results.tar.gz`` and
``run.log``); DEST a docs folder such as ``docs/miniature/ruler-long-32k``. For each model in the
bundle's ``results/`` it writes ``DEST/MODEL/``: ``ruler/ruler.json.xz`` (every sample's prediction,
xz-compressed: a 14th of the size, since each GPU call carries the whole tracked tree), ``train.json``
for a trained mode, the run's ``environment.json`` (versions and card) and ``run.log``. A mode trained
but not yet evaluated (a session that ran out of device time) is filed with what it has.
``ruler_report.py DEST`` then reads them. A model already filed in DEST is refused in one line unless
``--replace`` (a retraining replaces its first result only when asked), and a replacement names every
filed file it changes or drops (a run restored from an older keep brings its older ``train.json`` and
log: what to put back by hand); each model's folder is put in place whole (written beside it, then
renamed).
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script

from anchor_lightning.errors import UserError  # noqa: E402


def changed_files(filed: Path, staged: Path) -> list[str]:
    """What filing ``staged`` over ``filed`` changes: each file of ``filed`` that differs (``NAME
    differs``) or is not in ``staged`` (``NAME dropped``), by path inside the folder, in name order."""
    changes = []
    for old in sorted(p for p in filed.rglob("*") if p.is_file()):
        name = old.relative_to(filed).as_posix()
        new = staged / name
        if not new.is_file():
            changes.append(f"{name} dropped")
        elif new.read_bytes() != old.read_bytes():
            changes.append(f"{name} differs")
    return changes


def file_bundle(files_at: Path, dest: Path, replace: bool = False) -> list[str]:
    """The models filed, in name order; each replacement's changes to what was filed go to stderr."""
    bundle = files_at / "miniature-results.tar.gz"
    if not bundle.is_file():
        raise UserError(f"{files_at}: no miniature-results.tar.gz (the folder a gpu_call.sh call's files came to)")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(bundle) as tar:
            tar.extractall(tmp, filter="data")
        results = Path(tmp) / "results"
        models = sorted(
            p.name
            for p in results.iterdir()
            if p.is_dir() and ((p / "ruler" / "ruler.json").is_file() or (p / "train.json").is_file())
        )
        if not models:
            raise UserError(
                f"{bundle}: no MODEL/ruler/ruler.json or MODEL/train.json in its results (did a step finish?)"
            )
        there = [m for m in models if (dest / m).exists()]
        if there and not replace:
            raise UserError(f"{dest}: {', '.join(there)} filed already (--replace to file this run instead)")
        for model in models:
            target = dest / model
            staged = dest / f".{model}.filing"
            shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir(parents=True)
            ruler = results / model / "ruler" / "ruler.json"
            if ruler.is_file():
                (staged / "ruler").mkdir()
                (staged / "ruler" / "ruler.json.xz").write_bytes(lzma.compress(ruler.read_bytes(), preset=9))
            for name, source in (
                ("train.json", results / model / "train.json"),
                ("environment.json", results / "environment.json"),
                ("run.log", files_at / "run.log"),
            ):
                if source.is_file():
                    (staged / name).write_bytes(source.read_bytes())
            if target.exists():
                changes = changed_files(target, staged)
                print(f"{target}: replaced; {', '.join(changes) or 'nothing filed changed'}", file=sys.stderr)
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files_at", type=Path, help="the folder a gpu_call.sh call's files came back to")
    parser.add_argument("dest", type=Path, help="the docs folder, e.g. docs/miniature/ruler-long-32k")
    parser.add_argument("--replace", action="store_true", help="file over a model filed already")
    args = parser.parse_args(argv)
    try:
        models = file_bundle(args.files_at, args.dest, args.replace)
    except UserError as error:
        print(f"file_bundle.py: {error}", file=sys.stderr)
        return 2
    print(f"filed {', '.join(models)} into {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
