"""Directories the commands write to, checked before any work is done: a read-only or impossible
location stops the run with one line naming it."""

from __future__ import annotations

import os
import tempfile
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
