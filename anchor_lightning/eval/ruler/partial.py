"""A RULER evaluation's finished groups on disk, so that one stopped midway goes on where it stopped.

``evaluate --suite ruler --out DIR`` appends each (task, length) group's scored samples to
``DIR/ruler.partial.jsonl`` as soon as the group is done. The file's first line is the evaluation's
key: what makes a group's samples and predictions what they are (the model's weights and config, the
dtype, the settings that build and prompt the samples, the data's digests), never the lengths or
tasks asked for, so a run that adds a length reuses the others. Run again into the same DIR with the
same key, the evaluation takes the groups found there and runs the rest; once every group is done it
writes ``ruler.json`` and removes the partial file. A partial file of another key (another model,
other settings) is never mixed in: the evaluation says so in one line and starts over.

A group is appended whole in one write and flushed to disk, so a process killed mid-write leaves at
most a torn last line, which the next run drops (that group runs again).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from anchor_lightning.paths import atomic_write

NAME = "ruler.partial.jsonl"
SAMPLED = 1024  # evenly spaced elements of each tensor that the fingerprint reads


def spaced_indices(numel: int, count: int = SAMPLED) -> torch.Tensor:
    """``min(numel, count)`` indices from 0 to ``numel - 1`` (both ends included), evenly spaced, in
    integer arithmetic: a float32 ``linspace`` rounds past the last index above 2**24 elements."""
    count = min(numel, count)
    if count <= 1:
        return torch.zeros(count, dtype=torch.long)
    return torch.arange(count, dtype=torch.long) * (numel - 1) // (count - 1)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A digest of the model's tensors as loaded (name, shape, dtype and up to ``SAMPLED`` evenly
    spaced values of each parameter and buffer): another training or another RoPE changes it, while it
    costs a few small reads whatever the model's size (no pass over every weight)."""
    digest = hashlib.sha256()
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        flat = tensor.detach().reshape(-1)
        picks = spaced_indices(flat.numel()).to(flat.device)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(flat[picks].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


def _normal(key: dict) -> dict:
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def _differing(saved: dict, current: dict) -> list[str]:
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


class PartialRuler:
    """The groups an evaluation of ``key`` finished in ``folder`` (``get``), and each new one (``add``)."""

    def __init__(self, folder: Path, key: dict, say: Callable[[str], None] = print) -> None:
        self.path = Path(folder) / NAME
        self.key = _normal(key)
        self.groups: dict[tuple[str, int], list[dict]] = {}
        if self.path.is_file():
            self._read(say)
        # the header and every whole group found, rewritten at once (drops a torn last line)
        lines = [json.dumps({"key": self.key})]
        lines += [json.dumps({"task": t, "length": n, "records": r}) for (t, n), r in self.groups.items()]
        atomic_write(self.path, "\n".join(lines) + "\n")

    def _read(self, say: Callable[[str], None]) -> None:
        lines = self.path.read_text().splitlines()
        try:
            saved = json.loads(lines[0])["key"] if lines else None
        except (json.JSONDecodeError, KeyError, TypeError):
            saved = None
        if saved != self.key:
            what = ", ".join(_differing(saved, self.key)) if isinstance(saved, dict) else "unreadable"
            say(f"{self.path} holds another evaluation's groups (differs in: {what}): starting over")
            return
        for line in lines[1:]:
            try:
                group = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line: that group runs again
            self.groups[(group["task"], int(group["length"]))] = group["records"]
        if self.groups:
            samples = sum(len(r) for r in self.groups.values())
            say(
                f"RULER: {len(self.groups)} (task, length) groups ({samples} samples) taken from an earlier run "
                f"of the same evaluation ({self.path}; delete it to start over)"
            )

    def get(self, task: str, length: int) -> list[dict] | None:
        return self.groups.get((task, length))

    def add(self, task: str, length: int, records: list[dict]) -> None:
        """Append one finished group, whole, and flush it to disk."""
        self.groups[(task, length)] = records
        with open(self.path, "a") as f:
            f.write(json.dumps({"task": task, "length": length, "records": records}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
