"""The README's GPU install as a new user runs it, on the lent GPU machine, then the README's first GPU run.

The machine has no package registry and takes at most 64 MiB a call, while ``pip install -e '.[gpu]'``
needs about 215 MB of wheels it lacks (flash-attn-4 and the CuTe DSL, whose ``nvidia-cutlass-dsl``
requires both its cu12 and cu13 libraries, 92 MB each; liger-kernel, torchao; and what our base
requirements add to the machine's image: jsonargparse, datasets, zstandard). So:

    here, once:     python lab/gpu/gpu_install.py prepare          # PyPI's wheels into .gpuinstall/1..n
    there, a call per folder, each carrying .gpuinstall/N, within 30 s of the last:
                    python3 lab/gpu/gpu_install.py stage
    the last call (it stages its own carry too):
                    python3 lab/gpu/gpu_install.py walk --out $OUT

``prepare`` downloads the wheels for the machine (CPython 3.12, x86_64 Linux), splits the large ones
into pieces and groups pieces and wheels into carry folders of at most CARRY_BYTES, with
``manifest.json`` (each wheel's pieces and sha256). ``walk`` joins the pieces back into PyPI's very
files (the sha256 checked), makes a fresh virtual environment over the image's packages (torch comes
from the image, as on any CUDA machine: ``layer_over_this_environment``), runs the README's
``pip install -e '.[gpu]'`` against that wheel folder only (``--no-index --find-links``, and
``--no-build-isolation`` since setuptools cannot be fetched), then from an empty directory the README's
``python -m anchor_lightning fit --config recipes/debug/tiny-gpu.yaml``, and brings back the install
log, the run's log and the installed versions; it prints the banner line that names the kernels.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script

from anchor_lightning.errors import UserError  # noqa: E402
from anchor_lightning.paths import file_sha256  # noqa: E402
from lab import pieces as cut_pieces  # noqa: E402

FOLDER = Path(".gpuinstall")
PIECES = Path("/tmp/gpuinstall-pieces")
WHEELHOUSE = Path("/tmp/wheelhouse")
VENV = Path("/tmp/newuser")
PIECE_BYTES = 46_000_000
CARRY_BYTES = 58_000_000  # beside the tracked tree (about 7.5 MB), within a call's 64 MiB
# the [gpu] extra's wheels at the pins of pyproject.toml, with what they pull in, and the base
# requirements the machine's image lacks (its package list: /work/.library/device/KINDS.md)
WHEELS = [
    "flash-attn-4==4.0.0b36",
    "nvidia-cutlass-dsl==4.8.1",
    "nvidia-cutlass-dsl-libs-base==4.8.1",
    "nvidia-cutlass-dsl-libs-core==4.8.1",
    "nvidia-cutlass-dsl-libs-cu12==4.8.1",
    "nvidia-cutlass-dsl-libs-cu13==4.8.1",
    "quack-kernels==0.6.5",
    "apache-tvm-ffi==0.1.15.post2",
    "torch-c-dlpack-ext==0.1.5",
    "liger-kernel==0.8.5",
    "torchao==0.18.0",
    "jsonargparse==4.53.0",
    "docstring-parser==0.18.0",
    "typeshed-client==2.14.0",
    "importlib-resources==6.5.2",
    "datasets==5.2.0",
    "dill==0.4.0",
    "multiprocess==0.70.18",
    "zstandard==0.25.0",
]
PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:", "--no-deps"]
for tag in ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"):
    PLATFORM += ["--platform", tag]


def plan(sizes: dict[str, int], piece_bytes: int = PIECE_BYTES, carry_bytes: int = CARRY_BYTES) -> list[list[tuple]]:
    """Carries for wheels of ``sizes`` (name -> bytes): each wheel whole or in pieces of at most
    ``piece_bytes``, as ``(wheel, index, start, length)``; the largest first into the first carry that
    has room (first fit), each carry at most ``carry_bytes``. Pure."""
    if piece_bytes > carry_bytes:
        raise ValueError(f"a piece of {piece_bytes} bytes does not fit a carry of {carry_bytes}")
    items = []
    for name, size in sizes.items():
        for index, start in enumerate(range(0, max(size, 1), piece_bytes)):
            items.append((name, index, start, min(piece_bytes, size - start)))
    items.sort(key=lambda item: (-item[3], item[0], item[1]))
    carries: list[list[tuple]] = []
    for item in items:
        room = next((c for c in carries if sum(i[3] for i in c) + item[3] <= carry_bytes), None)
        if room is None:
            carries.append(room := [])
        room.append(item)
    return carries


def prepare(folder: Path = FOLDER) -> list[Path]:
    """Here: PyPI's wheels for the machine into ``folder/wheels``, then :func:`pack`."""
    download = folder / "wheels"
    download.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", *PLATFORM, "-d", str(download), *WHEELS], check=True)
    return pack(download, folder)


def pack(download: Path, folder: Path, piece_bytes: int = PIECE_BYTES, carry_bytes: int = CARRY_BYTES) -> list[Path]:
    """The wheels of ``download`` split and grouped (:func:`plan`) into ``folder/1..n``, with
    ``manifest.json`` (each wheel's pieces and sha256) in ``folder/1``."""
    wheels = {p.name: p for p in sorted(download.glob("*.whl"))}
    carries = plan({name: p.stat().st_size for name, p in wheels.items()}, piece_bytes, carry_bytes)
    for old in folder.glob("[0-9]*"):
        shutil.rmtree(old)
    home = {(name, index): folder / str(n) for n, carry in enumerate(carries, 1) for name, index, _, _ in carry}
    manifest: dict[str, dict] = {}
    for name, path in wheels.items():
        pieces = cut_pieces.cut(path, piece_bytes, lambda i, name=name: home[name, i] / f"{name}.{i:02d}")
        manifest[name] = {"sha256": file_sha256(path), "pieces": [p.name for p in pieces]}
    (folder / "1" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return [folder / str(n) for n in range(1, len(carries) + 1)]


def stage(folder: Path = FOLDER, pieces: Path = PIECES) -> str:
    """There: whatever ``folder/N`` this call carries, copied into ``pieces``."""
    pieces.mkdir(parents=True, exist_ok=True)
    copied = [p for d in sorted(folder.glob("[0-9]*")) for p in sorted(d.iterdir())]
    for path in copied:
        shutil.copy(path, pieces / path.name)
    return f"staged {len(copied)} files into {pieces}" if copied else "this call carried no .gpuinstall/N folder"


def join(pieces: Path = PIECES, wheelhouse: Path = WHEELHOUSE) -> list[Path]:
    """There: each wheel of the manifest from its pieces, checked against PyPI's sha256."""
    manifest_path = pieces / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit("no manifest.json staged: the call carrying .gpuinstall/1 is missing")
    manifest = json.loads(manifest_path.read_text())
    missing = [p for entry in manifest.values() for p in entry["pieces"] if not (pieces / p).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} pieces not staged yet (first: {missing[0]}): carry the other folders")
    try:
        return [
            cut_pieces.join([pieces / p for p in e["pieces"]], wheelhouse / name, e["sha256"])
            for name, e in manifest.items()
        ]
    except UserError as error:
        raise SystemExit(f"{error} (PyPI's)") from None


def layer_over_this_environment(venv: Path) -> None:
    """The machine's PyTorch lives in a virtual environment of its own (/opt/torch/.venv), and a venv
    made from a venv sees the base interpreter's packages, not that environment's: a ``.pth`` file puts
    this interpreter's site-packages on the new environment's path, where pip sees them as installed."""
    import sysconfig

    mine = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(found) / "the-image.pth").write_text("\n".join(sorted(mine)) + "\n")


def walk(out: Path) -> int:
    """There: the README's GPU install into a fresh environment, then its first GPU run."""
    print(stage())
    wheels = join()
    print(f"joined {len(wheels)} wheels into {WHEELHOUSE}, each PyPI's sha256")
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
        layer_over_this_environment(VENV)
    python = str(VENV / "bin" / "python")
    install = [python, "-m", "pip", "install", "--no-index", "--find-links", str(WHEELHOUSE), "--no-build-isolation"]
    install += ["-e", f"{ROOT}[gpu]"]
    print("$ " + " ".join(install))
    done = subprocess.run(install, capture_output=True, text=True)
    (out / "install.log").write_text(done.stdout + done.stderr)
    print((done.stdout + done.stderr)[-3000:])
    if done.returncode != 0:
        return done.returncode
    versions = subprocess.run([python, "-m", "pip", "list"], capture_output=True, text=True).stdout
    (out / "pip-list.txt").write_text(versions)
    run_dir = Path("/tmp/newuser-run")
    run_dir.mkdir(exist_ok=True)
    fit = [python, "-m", "anchor_lightning", "fit", "--config", "recipes/debug/tiny-gpu.yaml"]
    print(f"$ cd {run_dir} && python " + " ".join(fit[1:]))
    ran = subprocess.run(fit, cwd=run_dir, capture_output=True, text=True)
    log = ran.stdout + ran.stderr
    (out / "fit.log").write_text(log)
    banner = [line for line in log.splitlines() if "kernels:" in line or "not installed" in line]
    print("\n".join(banner) or "(no banner line)")
    print(log[-2000:])
    return ran.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("prepare", help="here: download, split and group the wheels into .gpuinstall/1..n")
    verbs.add_parser("stage", help="there: copy this call's carried pieces aside")
    p = verbs.add_parser("walk", help="there: join, install as the README says, run the first GPU recipe")
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.verb == "prepare":
        made = prepare()
        for target in made:
            size = sum(p.stat().st_size for p in target.iterdir())
            print(f"{target}: {size / 1e6:.1f} MB ({', '.join(sorted(p.name for p in target.iterdir()))})")
        return 0
    if args.verb == "stage":
        print(stage())
        return 0
    return walk(args.out)


if __name__ == "__main__":
    sys.exit(main())
