"""What makes a run the run it is, stored in every checkpoint and compared on resume: the settings
that change its rows (mode, layout, row length, the data's fingerprint and packing) or its model (the
architecture and RoPE). A resume under other settings would silently continue another run's training;
it stops instead, with one line naming what differs."""

from __future__ import annotations

from anchor_lightning.errors import UserError

KEY = "anchor_lightning_identity"
VERSION_KEY = "anchor_lightning_state_version"
# the layout of what this package keeps in a checkpoint (identity, counters, data position): raise it when
# that layout changes, and teach check_state_version to read the older ones it still can
STATE_VERSION = 1
# config fields that do not change the model's function (paths, versions, runtime switches)
VOLATILE = {
    "_name_or_path",
    "name_or_path",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "use_cache",
    "architectures",
    "_attn_implementation",
    "_attn_implementation_internal",
    "attn_implementation",
    "_commit_hash",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
}


def model_identity(mode: str, layout: str, seq_len: int, config) -> dict:
    fields = {k: v for k, v in config.to_dict().items() if k not in VOLATILE}
    return {"mode": mode, "layout": layout, "seq_len": seq_len, "config": fields}


def differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``key: saved -> current`` for every leaf that differs."""
    found = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return found


def check_same_run(saved: dict | None, current: dict, what: str, field: str) -> None:
    """Refuse a resume whose settings differ from the checkpoint's (older checkpoints carry none)."""
    if not saved:
        return
    changed = differences(saved, current)
    if changed:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise UserError(
            f"the checkpoint's {what} differ from this run's ({shown}): resuming would continue another run; "
            "resume with its own settings, or start this run in its own checkpoint directory",
            field=field,
        )


def check_state_version(checkpoint: dict) -> int:
    """The checkpoint's state version (0: written before versions were kept, read as 1); one written by a
    newer package, whose state this one cannot read, stops with one line."""
    version = int(checkpoint.get(VERSION_KEY, 0))
    if version > STATE_VERSION:
        raise UserError(
            f"written by a newer anchor-lightning (checkpoint state version {version}; this one reads up to "
            f"{STATE_VERSION}): upgrade anchor-lightning to resume it",
            field="--ckpt_path",
        )
    return version
