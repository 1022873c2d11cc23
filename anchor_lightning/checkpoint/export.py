"""Export a training checkpoint to a Hugging Face directory that loads without this package.

Writes the weights (safetensors) and config with transformers' own ``sdpa`` attention and the model's
first token and EOS as its ``bos_token_id``/``eos_token_id``, the tokenizer (a Hugging Face one as it
was, the built-in byte tokenizer as equivalent Hugging Face files), and ``ANCHOR.md``: how the model
was trained and exactly how to run it (F at position 0). The ``export`` verb
(``anchor_lightning/commands/export.py``) is the front-end.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from anchor_lightning.checkpoint.identity import check_state_version
from anchor_lightning.data.tokenizer import BYTES, load_tokenizer
from anchor_lightning.errors import UserError
from anchor_lightning.paths import atomic_directory

NOTE = """# Trained with anchor-lightning

- attention mode: `{mode}` (backend `{backend}`), rows of {seq_len} slots, RoPE parameters {rope}
- first token F: id {anchor} (`{anchor_text}`); documents ended with id {eos} (`{eos_text}`)

The model was trained with F at RoPE position 0, visible to every token, and each document's text
numbered from position 1 onwards. Run it the same way: put F first and let positions run on from 0.
{bos_rule}

```python
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("this-directory")
model = AutoModelForCausalLM.from_pretrained("this-directory")
ids = [{anchor}] + tokenizer("your text", add_special_tokens=False)["input_ids"]
out = model.generate(torch.tensor([ids]), max_new_tokens=32)
```

This directory uses transformers' own attention (`sdpa`) and loads without anchor-lightning.
"""


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


def load_module(ckpt: str):
    """The trained LightningModule, rebuilt from its hyper-parameters, with the checkpoint's weights,
    and the data module's hyper-parameters."""
    from anchor_lightning.model.module import AnchorLM

    checkpoint = read_checkpoint(ckpt)
    # LightningCLI stores its own "_instantiator" beside the init arguments
    try:
        module = AnchorLM(**{k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")})
    except TypeError as err:
        raise UserError(f"not a checkpoint of anchor-lightning's model ({err})", file=ckpt) from None
    module.configure_model()
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval(), checkpoint.get("datamodule_hyper_parameters", {})


def _text(tokenizer, token: int) -> str:
    return tokenizer.decode([token]).replace("`", "'")


def _note(module, tokenizer, folder: Path, anchor: int, eos: int, rope: dict) -> str:
    """ANCHOR.md: how the model was trained and how to feed it (whether the saved tokenizer adds F)."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(folder)
    adds = saved("x")["input_ids"][:1] == [anchor]
    bos_rule = (
        f"The tokenizer adds F by itself (`tokenizer(text)` starts with {anchor}); with "
        "`add_special_tokens=False`, as below, put it first yourself."
        if adds
        else f"The tokenizer does NOT add F (`tokenizer(text)` does not start with {anchor}): put it first yourself, "
        "as below, for generation, scoring and fine-tuning alike."
    )
    return NOTE.format(
        mode=module.mode,
        backend=module.backend,
        seq_len=module.seq_len,
        rope=rope,
        anchor=anchor,
        anchor_text=_text(tokenizer, anchor),
        eos=eos,
        eos_text=_text(tokenizer, eos),
        bos_rule=bos_rule,
    )


def export(ckpt: str, out: str, dtype: str = "float32") -> Path:
    target = Path(out)
    if target.is_dir() and any(target.iterdir()) and not (target / "ANCHOR.md").is_file():
        raise UserError("not empty and not an earlier export: choose a new directory", file=str(target), field="--out")
    module, data = load_module(ckpt)
    tokenizer = load_tokenizer(data.get("tokenizer") or BYTES)
    anchor = data.get("anchor_id")
    anchor = tokenizer.bos_token_id if anchor is None else anchor
    eos = data.get("eos_id")
    eos = tokenizer.eos_token_id if eos is None else eos
    model = module.model.to(getattr(torch, dtype))
    model.set_attn_implementation("sdpa")
    config = model.config
    config.use_cache = True
    config.bos_token_id, config.eos_token_id = anchor, eos
    if model.generation_config is not None:
        model.generation_config.bos_token_id, model.generation_config.eos_token_id = anchor, eos
    rope = dict(module.hf_config.rope_parameters or {})
    if rope.get("rope_type", "default") == "default" and module.seq_len > (config.max_position_embeddings or 0):
        config.max_position_embeddings = module.seq_len  # the length it was trained on
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # written into a temporary sibling and renamed: a kill leaves no half export, and an export over
        # an earlier one replaces it whole
        with atomic_directory(target, replace=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "ANCHOR.md").write_text(_note(module, tokenizer, tmp, anchor, eos, rope))
    except OSError as err:
        raise UserError(f"cannot write the export ({err.strerror or err})", file=str(target), field="--out") from None
    return target
