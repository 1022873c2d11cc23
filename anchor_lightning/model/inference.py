"""Models for the inference-side tools (``evaluate``, ``diagnose``): a checkpoint loaded as plain
transformers serves it (its own ``sdpa`` attention, a KV cache), optionally at another RoPE base; for
``diagnose`` also a random initialisation from a config or a recipe."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml  # type: ignore[import-untyped]  # PyYAML ships no types

from anchor_lightning.checkpoint.gguf import local_checkpoint
from anchor_lightning.errors import UserError, broken_model
from anchor_lightning.model.build import configure, load_config

FIX = "--rope_theta evaluates the model at another RoPE base"  # what configure's warning advises here


def load_inference_model(
    source: str,
    *,
    rope_theta: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    max_length: int | None = None,
    allow_random: bool = False,
    seed: int = 0,
):
    """(model in eval mode on ``device``, its checkpoint directory or None for a random init).

    ``source`` is a Hugging Face directory or a ``.gguf`` file; with ``allow_random`` also a
    ``config.json`` or a recipe YAML (random weights from its ``model.config``, seeded)."""
    from transformers import AutoModelForCausalLM

    path = Path(local_checkpoint(source, field="--model"))
    if (path.suffix == ".ckpt" and path.exists()) or (
        path / ".metadata"
    ).is_file():  # fit's checkpoint: a file, or sharded (FSDP)
        raise UserError(
            f"a training checkpoint, not a model: export it first (anchor-lightning export --ckpt_path {source} "
            "--out DIR; a sharded one consolidated before, README's 'Checkpoints, resuming, exporting') and give DIR",
            file=source,
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError("not a Hugging Face checkpoint directory (no config.json) nor a .gguf file", file=source)
        config = configure(load_config(str(path), None), max_length or 0, rope_theta, fix=FIX)
        config.use_cache = True
        try:
            model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype, attn_implementation="sdpa")
        except (OSError, ValueError) as err:  # e.g. a directory with a config.json and no weights
            raise UserError(f"cannot load the checkpoint: {str(err).splitlines()[0]}", file=source) from None
        require_finite_weights(model, source)
        return model.to(device).eval(), path  # type: ignore[arg-type]  # transformers types .to() narrowly
    if not allow_random or not path.is_file():
        what = "model directory, .gguf file, config or recipe" if allow_random else "model directory or .gguf file"
        raise UserError(f"{'not a' if path.exists() else 'no such'} {what}", file=source)
    if path.suffix in (".yaml", ".yml"):
        try:
            recipe = yaml.safe_load(path.read_text())["model"]
            fields = recipe["config"]
        except (yaml.YAMLError, KeyError, TypeError):
            raise UserError("a recipe needs model.config (the architecture) for a random init", file=source) from None
        config = configure(load_config(None, fields), max_length or 0, rope_theta or recipe.get("rope_theta"), fix=FIX)
    else:
        try:
            config = configure(load_config(None, str(path)), max_length or 0, rope_theta, fix=FIX)
        except (OSError, ValueError) as err:
            raise UserError(
                f"not a model: neither a checkpoint nor a config.json ({str(err).splitlines()[0]})", file=source
            ) from None
    config.use_cache = True
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval(), None


def require_finite_weights(model, source: str) -> None:
    """Refuse, in one line and before any work, a checkpoint with a NaN or infinite weight (it would
    otherwise run a whole evaluation or diagnostic to meaningless numbers)."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        more = f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""
        raise broken_model(f"weights in {bad[0]}{more}", file=source)
