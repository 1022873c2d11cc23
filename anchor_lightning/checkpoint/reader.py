"""A training checkpoint file written by ``fit`` (Lightning's ``.ckpt``), read whole or refused in one
line: a sharded directory, a missing or truncated file, another program's file, or state a newer
package wrote."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from anchor_lightning.checkpoint.identity import check_state_version
from anchor_lightning.errors import UserError


def read_checkpoint(ckpt: str) -> dict:
    """A checkpoint file written by ``fit``, or a one-line error for anything else."""
    path = Path(ckpt)
    if path.is_dir():
        raise UserError(
            "a sharded (FSDP) checkpoint directory: first run python -m "
            "lightning.pytorch.utilities.consolidate_checkpoint on it",
            file=str(path),
        )
    if not path.is_file():
        raise UserError("no such checkpoint file", file=str(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"not a readable checkpoint (truncated or not a torch file: {first})", file=str(path)) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise UserError(
            "not a checkpoint written by anchor-lightning's fit (no state_dict / hyper_parameters)", file=str(path)
        )
    try:
        check_state_version(checkpoint)
    except UserError as err:
        raise UserError(err.message, file=str(path), field=err.field) from None
    return checkpoint
