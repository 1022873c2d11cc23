"""Files cut into pieces for the GPU machine's calls, and joined back there, checked.

A call carries at most 64 MiB in and brings at most 16 MiB a file back, so three things travel in
pieces: the GGUF (lab/miniature/prepare_carry.sh, joined by lab/miniature/gpu_call.sh), a trained
run's tar (lab/miniature/keep.py) and the GPU install's wheels (lab/gpu/gpu_install.py). Each cuts
with :func:`cut` and joins with :func:`join`, which puts the file in place only when the pieces join
to the whole file's sha256.

    python3 lab/pieces.py cut FILE --piece-bytes N PIECE0 PIECE1 ...   # exactly as many names as pieces
    python3 lab/pieces.py join --sha256 HEX --into FILE PIECE0 PIECE1 ...
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script

from anchor_lightning.errors import UserError  # noqa: E402

CHUNK = 1 << 22


def count(size: int, piece_bytes: int) -> int:
    """How many pieces of at most ``piece_bytes`` a file of ``size`` bytes is cut into (one for an empty file)."""
    if piece_bytes < 1:
        raise UserError(f"a piece of {piece_bytes} bytes: give a positive size")
    return max(1, -(-size // piece_bytes))


def cut(source: Path, piece_bytes: int, name: Callable[[int], Path]) -> list[Path]:
    """``source`` as consecutive pieces of at most ``piece_bytes``, piece ``i`` written to ``name(i)``
    (its folder created). Returns the pieces in order."""
    made = []
    with Path(source).open("rb") as whole:
        for index in range(count(Path(source).stat().st_size, piece_bytes)):
            target = Path(name(index))
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                left = piece_bytes
                while left and (chunk := whole.read(min(CHUNK, left))):
                    out.write(chunk)
                    left -= len(chunk)
            made.append(target)
    return made


def join(pieces: Sequence[Path], target: Path, sha256: str) -> Path:
    """``pieces`` joined in order into ``target``, put in place only if they join to ``sha256``;
    otherwise one line, and ``target`` is left as it was."""
    missing = [str(p) for p in pieces if not Path(p).is_file()]
    if missing:
        raise UserError(f"{len(missing)} pieces missing (first: {missing[0]})")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.joining")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for piece in pieces:
                with Path(piece).open("rb") as f:
                    while chunk := f.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != sha256.strip().lower():
            raise UserError(f"{target.name}: its {len(pieces)} pieces do not join to the expected sha256")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("cut", help="FILE into pieces of at most --piece-bytes, one name each")
    p.add_argument("file", type=Path)
    p.add_argument("--piece-bytes", type=int, required=True)
    p.add_argument("names", type=Path, nargs="+")
    p = verbs.add_parser("join", help="the pieces into --into, checked against --sha256")
    p.add_argument("--sha256", required=True)
    p.add_argument("--into", type=Path, required=True)
    p.add_argument("pieces", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.verb == "cut":
            if not args.file.is_file():
                raise UserError(f"{args.file}: no such file")
            needed = count(args.file.stat().st_size, args.piece_bytes)
            if needed != len(args.names):
                raise UserError(
                    f"{args.file}: {args.file.stat().st_size} bytes make {needed} pieces of at most "
                    f"{args.piece_bytes}, and {len(args.names)} names were given"
                )
            made = cut(args.file, args.piece_bytes, lambda i: args.names[i])
            print(f"cut {args.file} into {len(made)} pieces")
        else:
            join(args.pieces, args.into, args.sha256)
            print(f"joined {len(args.pieces)} pieces into {args.into}, sha256 checked")
    except UserError as error:
        print(f"pieces.py {args.verb}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
