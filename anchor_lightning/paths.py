"""Files and directories: output directories checked before any work is done (a read-only or
impossible location stops the run with one line naming it), directories written atomically (the
packed-row cache, GGUF conversions), files and figures written whole or not at all, and file digests
(cache keys)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

from anchor_lightning.errors import UserError


def writable_directory(path: str | os.PathLike, field: str) -> Path:
    """``path`` as a directory that exists and takes files (created with its parents if needed)."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except FileExistsError:
        raise UserError("exists and is not a directory", file=str(directory), field=field) from None
    except OSError as err:
        raise UserError(f"cannot write here ({err.strerror or err})", file=str(directory), field=field) from None
    return directory


def cache_dir(kind: str) -> Path:
    """Where the package caches ``kind`` (GGUF conversions, RULER samples): ``$ANCHOR_LIGHTNING_CACHE/kind``,
    else ``$XDG_CACHE_HOME/anchor_lightning/kind`` (``~/.cache`` by default). Never inside the working tree."""
    explicit = os.environ.get("ANCHOR_LIGHTNING_CACHE")
    if explicit:
        return Path(explicit) / kind
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "anchor_lightning" / kind


def file_sha256(*paths: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, or of several files' joined in order (a file's pieces), read in
    4 MiB blocks."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def temporary_sibling(target: Path) -> Path:
    """Where ``target`` is written before it is renamed into place: a hidden sibling named by this host
    and process, so a later writer can tell a dead writer's leftover from a live one's."""
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_siblings(target: Path) -> list[Path]:
    """Temporary directories of ``target`` left by writers of this host that died (a kill in the
    middle): their names carry the host and the process id. Other hosts' are left alone."""
    host = socket.gethostname()
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        parts = tmp.name[len(target.name) + 2 : -len(".tmp")].split(".")
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _alive(int(parts[1])):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_directory(target: Path, replace: bool = False):
    """Yield a temporary directory to fill; on success it becomes ``target`` in one rename, on any failure
    or interruption it is removed. If ``target`` exists, the new one replaces it (``replace``: the old is
    renamed aside first, then removed) or is dropped (another process made it first: theirs is kept). A
    reader that finds ``target`` therefore always finds it whole; a writer that was killed leaves a
    temporary directory, which the next writer of ``target`` on the same host removes."""
    remove_stale_siblings(target)
    tmp = temporary_sibling(target)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if target.exists() and replace:
            old = temporary_sibling(target)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        elif target.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write(target: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to the file ``target`` whole or not at all: into a temporary sibling, flushed to
    disk, then renamed over ``target`` (a reader sees the old file or the new one, never a part)."""
    target = Path(target)
    tmp = temporary_sibling(target)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_figure(fig, target: str | os.PathLike, **savefig: object) -> Path:
    """A matplotlib figure saved as a PNG through :func:`atomic_write` (whole or not at all)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig)
    return atomic_write(target, buffer.getvalue())


@contextlib.contextmanager
def exclusive(lock_file: Path, waiting: str | None = None):
    """Hold an exclusive lock on ``lock_file`` (created if needed) for the block: one process prepares
    a cache entry while the others, on this node or on another node of a shared file system, wait and
    then find it made. ``waiting`` is said once if the lock is held by someone else."""
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                from anchor_lightning.messages import say

                say(waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
