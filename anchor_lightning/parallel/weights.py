"""Loading a Hugging Face checkpoint into a (possibly sharded) model one tensor at a time.

Each rank reads each safetensors tensor from disk and keeps only its own shard
(``distribute_tensor(..., src_data_rank=None)`` slices locally, no communication), so no rank ever
holds the whole model, in any precision.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from anchor_lightning.errors import UserError


def safetensors_files(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return sorted({directory / name for name in json.loads(index.read_text())["weight_map"].values()})
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    raise UserError(f"{directory}: no model.safetensors or model.safetensors.index.json", field="model.pretrained")


@torch.no_grad()
def load_hf_weights(model: nn.Module, directory: str | Path) -> None:
    """Copy every tensor of the checkpoint into the matching parameter or buffer (sharded or not)."""
    from safetensors import safe_open
    from torch.distributed.tensor import DTensor, distribute_tensor

    targets: dict[str, torch.Tensor] = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    missing = {name for name, p in model.named_parameters()}
    tied = {name for name, p in model.named_parameters(remove_duplicate=False)} - missing
    for file in safetensors_files(directory):
        with safe_open(str(file), framework="pt", device="cpu") as reader:
            for name in reader.keys():
                if name not in targets:
                    continue  # e.g. an old rotary inv_freq buffer, or a tied head saved twice
                target = targets[name]
                full = reader.get_tensor(name).to(target.dtype)
                if isinstance(target, DTensor):
                    full = distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None)
                target.copy_(full)
                missing.discard(name)
    missing -= tied
    if missing:
        raise UserError(f"{directory}: the checkpoint lacks {sorted(missing)[:5]}", field="model.pretrained")
