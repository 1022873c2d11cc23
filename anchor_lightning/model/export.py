"""Export a training checkpoint to a Hugging Face directory that loads without this package.

The weights are read into the plain Hugging Face model of the checkpoint's own config (kept in it by
``fit``, ``checkpoint/identity.py``), never through the training module with its fused kernels and
patches, and without the pretrained files the run started from. Writes the weights (safetensors) and config with transformers' own ``sdpa`` attention and the model's
first token and EOS as its ``bos_token_id``/``eos_token_id``, the tokenizer (a Hugging Face one as it
was, the built-in byte tokenizer as equivalent Hugging Face files), and ``ANCHOR.md``: how the model
was trained and exactly how to run it (F at position 0). The ``export`` verb
(``anchor_lightning/commands/export.py``) is the front-end.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from anchor_lightning.checkpoint.gguf import local_checkpoint
from anchor_lightning.checkpoint.identity import KEY as IDENTITY_KEY
from anchor_lightning.checkpoint.reader import read_checkpoint
from anchor_lightning.data.tokenizer import BYTES, load_tokenizer
from anchor_lightning.errors import UserError
from anchor_lightning.model.build import configure, load_config
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


PREFIX = "net.lm."  # AnchorLM.net (PackedCausalLM) .lm (the Hugging Face model)


def checkpoint_config(checkpoint: dict, ckpt: str):
    """The trained model's Hugging Face config: the one the checkpoint carries, or (a checkpoint written
    before it carried one) rebuilt from its hyper-parameters as ``AnchorLM`` builds it."""
    identity = checkpoint.get(IDENTITY_KEY)
    if identity and identity.get("config", {}).get("model_type"):
        fields = dict(identity["config"])
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    hyper = checkpoint["hyper_parameters"]
    pretrained = hyper.get("pretrained")
    try:
        return configure(
            load_config(local_checkpoint(pretrained) if pretrained else None, hyper.get("config")),
            hyper.get("seq_len", 512),
            hyper.get("rope_theta"),
            hyper.get("rope_scaling"),
        )
    except (OSError, ValueError) as err:
        raise UserError(
            f"an older checkpoint without its model config, and its pretrained model cannot be read ({err})",
            file=ckpt,
        ) from None


def plain_model(ckpt: str, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, dict, dict]:
    """The trained Hugging Face model (transformers' ``sdpa`` attention, no training patches) with the
    checkpoint's weights, the model's and the data module's hyper-parameters."""
    checkpoint = read_checkpoint(ckpt)
    state = {k[len(PREFIX) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(PREFIX)}
    if not state:
        raise UserError("holds no model weights (no net.lm.* in its state_dict)", file=ckpt)
    config = checkpoint_config(checkpoint, ckpt)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        shown = ", ".join((missing + unexpected)[:3])
        raise UserError(f"its weights do not fit the model its config describes ({shown})", file=ckpt)
    model.tie_weights()
    return model.eval(), checkpoint["hyper_parameters"], checkpoint.get("datamodule_hyper_parameters", {})


def _text(tokenizer, token: int) -> str:
    return tokenizer.decode([token]).replace("`", "'")


def _note(hyper: dict, tokenizer, folder: Path, anchor: int, eos: int, rope: dict) -> str:
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
        mode=hyper.get("mode", "anchor"),
        backend=hyper.get("backend", "sdpa"),
        seq_len=hyper.get("seq_len", 512),
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
    model, hyper, data = plain_model(ckpt, getattr(torch, dtype))
    tokenizer = load_tokenizer(data.get("tokenizer") or BYTES)
    anchor = data.get("anchor_id")
    anchor = tokenizer.bos_token_id if anchor is None else anchor
    eos = data.get("eos_id")
    eos = tokenizer.eos_token_id if eos is None else eos
    if anchor is None or eos is None:
        raise UserError("the run's tokenizer has no first token or EOS, and the checkpoint names none", file=ckpt)
    config = model.config
    config.use_cache = True
    config.bos_token_id, config.eos_token_id = anchor, eos
    if model.generation_config is not None:
        model.generation_config.bos_token_id, model.generation_config.eos_token_id = anchor, eos
    seq_len = hyper.get("seq_len", 512)
    rope = dict(config.rope_parameters or {})
    if rope.get("rope_type", "default") == "default" and seq_len > (config.max_position_embeddings or 0):
        config.max_position_embeddings = seq_len  # the length it was trained on
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # written into a temporary sibling and renamed: a kill leaves no half export, and an export over
        # an earlier one replaces it whole
        with atomic_directory(target, replace=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "ANCHOR.md").write_text(_note(hyper, tokenizer, tmp, anchor, eos, rope))
    except OSError as err:
        raise UserError(f"cannot write the export ({err.strerror or err})", file=str(target), field="--out") from None
    return target
