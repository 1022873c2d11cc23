"""A trained mode kept across GPU sessions: its exported model and run state, out in pieces and back in.

A GPU call returns at most 64 MiB (8 files of 16 MiB) and carries at most 64 MiB in, the working tree
included, while an exported SmolLM2-135M is 540 MB in float32. So a mode trained in one session is
evaluated in a later one by sending it out over a few calls and carrying it back in over a few more:

    on the GPU machine, after the run exported MODE (gpu_call.sh keep MODE K, K = 0, 1, ...):
        python lab/miniature/keep.py send --work /tmp/miniature-MODE --part K --out $OUT
    here, with the folders those calls' files came back to:
        python lab/miniature/keep.py collect MODE /work/.device/12 /work/.device/13 ... [--carry .carry]
    then each call carries one .carry/kept/MODE/<n> folder (gpu_call.sh stage restores the run once
    every piece is there) and ``gpu_call.sh one MODE ...`` continues the run: its state says trained and
    exported, so it evaluates.

An evaluation goes on after the keep, and the session may end before it does. Its progress comes out
too: once a run is kept (or restored), every ``gpu_call.sh one``/``watch`` call of it also sends
``progress.tar`` (``keep.py progress``: the run's ``results/**/ruler.partial.jsonl`` as they stand;
``gpu_call.sh keep MODE progress`` sends it alone); ``collect`` given the latest such call's folder
too (after the keep calls' folders, or the carry's own ``.carry/kept/MODE/*``) carries it with the
first pieces, and ``restore`` puts it in place of the kept files it continues (a
partial file only grows: one that does not start with the kept one's bytes is not taken), so the
restored evaluation starts from the groups finished before the session ended.

What is kept: the run's ``state.json``, the arguments it was started with (``run.args``: ``one``
continues it only with the same), its ``run.log`` (the restored run logs on after it), ``logs/``,
``results/`` (train.json, whatever evaluations finished, and the finished (task, length) groups of a
RULER evaluation under way, ``ruler.partial.jsonl``: the restored run's evaluation goes on from them) and ``exported/`` with every floating weight
in bfloat16, half the bytes. RULER and every ``evaluate`` of the pipeline load the model in bfloat16,
and a float32 tensor cast to bfloat16 rounds the same whether the cast happens before or after the
transfer, so the kept model is evaluated bit for bit as the original would be; a float32 evaluation of
it would not be. ``kept.json`` in the restored folder says so.

The tar is built once on the machine (``WORK.keep/``) and each part sent from it, so parts from
different calls join; ``manifest.json`` (sent with part 0) holds the pieces' names and the whole tar's
sha256, checked here by ``collect`` and there by ``restore``.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script

from anchor_lightning.errors import UserError  # noqa: E402
from anchor_lightning.eval.ruler.partial import NAME as PARTIAL  # noqa: E402  (an evaluation's finished groups)
from anchor_lightning.paths import file_sha256  # noqa: E402
from lab import pieces as cut_pieces  # noqa: E402

PIECE_BYTES = 15 * 1024 * 1024  # a returned file is at most 16 MiB
SEND_PER_CALL = 4  # 4 x 15 MiB + the manifest: within a call's 64 MiB back
CARRY_PER_CALL = 3  # 3 x 15 MiB beside a working tree of about 7 MB: within a call's 64 MiB in
# run.args: gpu_call.sh's, to continue alike; run.log: background.sh's, to log on after it
KEPT = ("state.json", "run.args", "run.log", "logs", "results", "exported")
PROGRESS = "progress.tar"  # a later state of the kept run's RULER partial files (``progress``)


def to_bfloat16(folder: Path) -> None:
    """Every floating tensor of the safetensors files in ``folder`` in bfloat16 (and the index's size)."""
    import torch
    from safetensors.torch import load_file, save_file

    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        tensors = load_file(path)
        tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}
        total += sum(v.numel() * v.element_size() for v in tensors.values())
        save_file(tensors, path, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = total
        index.write_text(json.dumps(data, indent=2))


def build(work: Path, piece_bytes: int = PIECE_BYTES) -> dict:
    """``WORK.keep/``: the kept folders as one tar in pieces, and its manifest (built once: later calls reuse it)."""
    scratch = work.with_name(work.name + ".keep")
    manifest = scratch / "manifest.json"
    if manifest.is_file():
        return json.loads(manifest.read_text())
    state = work / "state.json"
    done = json.loads(state.read_text()).get("done", {}) if state.is_file() else {}
    exported = [p.name for p in sorted((work / "exported").glob("*")) if f"export-{p.name}" in done]
    if not exported:
        raise UserError(f"{work}: no exported model yet (keep a mode after its export step)")
    staging = scratch.with_name(scratch.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "tree").mkdir(parents=True)
    for name in KEPT:
        source = work / name
        if name == "exported":
            for mode in exported:  # only finished exports
                shutil.copytree(source / mode, staging / "tree" / name / mode)
        elif source.is_dir():
            shutil.copytree(source, staging / "tree" / name)
        elif source.is_file():
            shutil.copy2(source, staging / "tree" / name)
    for mode in exported:
        to_bfloat16(staging / "tree" / "exported" / mode)
    note = {"modes": exported, "weights": "bfloat16 (evaluate in bfloat16: the same bits as the float32 export)"}
    (staging / "tree" / "kept.json").write_text(json.dumps(note, indent=1))
    tar_path = staging / "kept.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted((staging / "tree").rglob("*")):
            tar.add(path, arcname=str(path.relative_to(staging / "tree")), recursive=False)
    sha256 = file_sha256(tar_path)
    pieces = [p.name for p in cut_pieces.cut(tar_path, piece_bytes, lambda i: staging / f"kept.tar.{i:03d}")]
    tar_path.unlink()
    shutil.rmtree(staging / "tree")
    data = {"work": work.name, "modes": exported, "pieces": pieces, "sha256": sha256}
    (staging / "manifest.json").write_text(json.dumps(data, indent=1))
    staging.rename(scratch)
    return data


def send(work: Path, part: int, out: Path, per_call: int = SEND_PER_CALL, piece_bytes: int = PIECE_BYTES) -> str:
    """Copy part ``part`` (``per_call`` pieces; the manifest with part 0) into ``out``."""
    manifest = build(work, piece_bytes)
    scratch = work.with_name(work.name + ".keep")
    parts = -(-len(manifest["pieces"]) // per_call)
    if not 0 <= part < parts:
        raise UserError(f"part {part}: the kept run has parts 0 to {parts - 1}")
    out.mkdir(parents=True, exist_ok=True)
    names = manifest["pieces"][part * per_call : (part + 1) * per_call]
    for name in names + (["manifest.json"] if part == 0 else []):
        shutil.copy2(scratch / name, out / name)
    more = f"; next: keep {part + 1}" if part + 1 < parts else "; that was the last"
    return f"sent part {part} of 0-{parts - 1} ({', '.join(names)}){more}"


def finished_groups(text: str) -> int:
    """The finished (task, length) groups in a partial file's text (its first line is the key)."""
    return max(0, sum(1 for line in text.splitlines() if line.strip()) - 1)


def progress(work: Path, out: Path) -> str:
    """There: ``out/progress.tar``, every ``results/**/ruler.partial.jsonl`` of the run in ``work`` as it stands."""
    found = sorted((work / "results").rglob(PARTIAL))
    if not found:
        raise UserError(f"{work}: no RULER evaluation under way (no {PARTIAL} under results/)")
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{PROGRESS}.tmp"
    count = 0
    with tarfile.open(staging, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in found:
            data = path.read_bytes()  # read once: the evaluation may append while this runs
            count += finished_groups(data.decode(errors="replace"))
            info = tarfile.TarInfo(str(path.relative_to(work)))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    staging.rename(out / PROGRESS)
    return f"sent the progress of {len(found)} RULER evaluation(s): {count} finished (task, length) groups"


def collect(mode: str, folders: list[Path], carry: Path, per_call: int = CARRY_PER_CALL) -> str:
    """Here: the pieces from the calls' folders, checked against the manifest, into
    ``carry/kept/MODE/1 ... n`` (``per_call`` pieces a folder, the manifest in the first), with the
    last ``progress.tar`` among the folders (in the order given: the calls' order) beside the manifest."""
    found: dict[str, Path] = {}
    for folder in folders:
        for path in folder.glob("kept.tar.*"):
            found[path.name] = path
        for name in ("manifest.json", PROGRESS):
            if (folder / name).is_file():
                found[name] = folder / name
    if "manifest.json" not in found:
        raise UserError("no manifest.json among the folders: add the folder of part 0's call")
    manifest = json.loads(found["manifest.json"].read_text())
    missing = [name for name in manifest["pieces"] if name not in found]
    if missing:
        raise UserError(f"pieces missing: {', '.join(missing)} (send the parts that hold them)")
    target = carry / "kept" / mode
    # built beside the target and put in its place at the end: the folders may be the carry's own (a
    # later progress added to a mode collected before), and a failed check leaves the old carry whole
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    groups = [manifest["pieces"][i : i + per_call] for i in range(0, len(manifest["pieces"]), per_call)]
    for n, group in enumerate(groups, 1):
        (staging / str(n)).mkdir(parents=True)
        for name in group:
            shutil.copy2(found[name], staging / str(n) / name)
    shutil.copy2(found["manifest.json"], staging / "1" / "manifest.json")
    every = [staging / str(n) / name for n, group in enumerate(groups, 1) for name in group]
    if file_sha256(*every) != manifest["sha256"]:
        shutil.rmtree(staging)
        raise UserError("the pieces do not join to the manifest's sha256: fetch them again")
    extra = ""
    if PROGRESS in found:
        shutil.copy2(found[PROGRESS], staging / "1" / PROGRESS)
        extra = f" (with the evaluation's progress from {found[PROGRESS].parent})"
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return f"{len(every)} pieces checked, in {len(groups)} carries{extra}: {', '.join(str(target / str(n)) for n in range(1, len(groups) + 1))}"


def apply_progress(tar_path: Path, run: Path) -> str:
    """The partial files of ``progress.tar`` into the unpacked run ``run``, each where it continues the
    kept file (or where there is none); what follows the kept run's state is said."""
    taken, refused = 0, []
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or parts[0] != "results" or ".." in parts or parts[-1] != PARTIAL:
                refused.append(f"{member.name} (not a RULER partial file of results/)")
                continue
            reader = tar.extractfile(member)
            assert reader is not None  # a regular file
            data = reader.read()
            target = run / member.name
            kept = target.read_bytes() if target.is_file() else b""
            kept = kept[: kept.rfind(b"\n") + 1]  # a group torn mid-write when kept: the run writes it again
            if not data.startswith(kept):
                refused.append(f"{member.name} (does not continue the kept file)")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            taken += finished_groups(data.decode(errors="replace")) - finished_groups(kept.decode(errors="replace"))
    said = f"; {taken} more RULER groups from the progress sent after the keep"
    return said + (f"; not taken: {', '.join(refused)}" if refused else "")


def restore(pieces: Path, work: Path) -> str:
    """There: once every piece is in ``pieces``, join them, check the sha256 and unpack into ``work``."""
    if (work / "kept.json").is_file():
        return f"{work}: restored already"
    if work.exists():
        raise UserError(f"{work} holds a run already: restore only onto a machine without one")
    manifest_path = pieces / "manifest.json"
    if not manifest_path.is_file():
        return f"{pieces}: waiting for the manifest (it travels with the first carry)"
    manifest = json.loads(manifest_path.read_text())
    have = [name for name in manifest["pieces"] if (pieces / name).is_file()]
    if len(have) < len(manifest["pieces"]):
        return f"{pieces}: {len(have)} of {len(manifest['pieces'])} pieces; carry the rest"
    staging = work.with_name(work.name + ".restore")
    shutil.rmtree(staging, ignore_errors=True)
    joined = cut_pieces.join(
        [pieces / name for name in manifest["pieces"]], staging.with_suffix(".tar"), manifest["sha256"]
    )
    staging.mkdir(parents=True)
    with tarfile.open(joined) as tar:
        tar.extractall(staging, filter="data")
    joined.unlink()
    more = apply_progress(pieces / PROGRESS, staging) if (pieces / PROGRESS).is_file() else ""
    staging.rename(work)
    return f"restored {', '.join(manifest['modes'])} into {work}{more}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("send", help="on the GPU machine: part K of a run's kept pieces into OUT")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--part", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = verbs.add_parser("progress", help="on the GPU machine: the run's RULER partial files as they stand into OUT")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = verbs.add_parser("collect", help="here: the returned pieces, checked, into carry folders")
    p.add_argument("mode")
    p.add_argument(
        "folders",
        type=Path,
        nargs="+",
        help="the folders the send calls' files came back to (and the progress call's, last)",
    )
    p.add_argument("--carry", type=Path, default=Path(".carry"))
    p = verbs.add_parser("restore", help="on the GPU machine: the carried pieces back into a run folder")
    p.add_argument("--pieces", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.verb == "send":
            print(send(args.work, args.part, args.out))
        elif args.verb == "progress":
            print(progress(args.work, args.out))
        elif args.verb == "collect":
            print(collect(args.mode, args.folders, args.carry))
        else:
            print(restore(args.pieces, args.work))
    except UserError as error:
        print(f"keep.py {args.verb}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
