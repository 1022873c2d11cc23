"""Export a training checkpoint to a Hugging Face directory that loads without this package.

    python -m anchor_lightning export --ckpt runs/.../last.ckpt --out exported/ [--dtype bfloat16]

Writes the weights (safetensors) and config with transformers' own ``sdpa`` attention, the tokenizer
when training used a Hugging Face one, and ``ANCHOR.md``: how the model was trained and how to run
it (keep the anchor, the BOS, at position 0).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from anchor_lightning.checkpoint.gguf import local_checkpoint
from anchor_lightning.data.tokenizer import BYTES
from anchor_lightning.errors import UserError

NOTE = """# Trained with anchor-lightning

- attention mode: `{mode}` (backend `{backend}`), rows of {seq_len} slots, RoPE parameters {rope}
- first token (anchor) id: {anchor}

The model was trained with its first token F at RoPE position 0, visible to every token, and the
text numbered from position 1 onwards. For inference keep it that way: start every sequence with
F at position 0 (what `generate` does when the tokenizer adds the BOS; add it yourself where the
tokenizer has none, e.g. `<|endoftext|>` for Qwen) and let positions run on from there.
This directory uses transformers' own attention (`sdpa`) and loads without anchor-lightning.
"""


def load_module(ckpt: str):
    """The trained LightningModule, rebuilt from its hyper-parameters, with the checkpoint's weights."""
    from anchor_lightning.model.module import AnchorLM

    path = Path(ckpt)
    if not path.is_file():
        raise UserError("no such checkpoint file", file=str(path))
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    # LightningCLI stores its own "_instantiator" beside the init arguments
    module = AnchorLM(**{k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")})
    module.configure_model()
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval(), checkpoint.get("datamodule_hyper_parameters", {})


def export(ckpt: str, out: str, dtype: str = "float32") -> Path:
    module, data = load_module(ckpt)
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    model = module.model.to(getattr(torch, dtype))
    model.set_attn_implementation("sdpa")
    model.config.use_cache = True
    model.save_pretrained(target)
    tokenizer = data.get("tokenizer")
    if tokenizer == BYTES:
        tokenizer = None  # the built-in byte tokenizer has no Hugging Face files
    if tokenizer is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(local_checkpoint(tokenizer, field="data.tokenizer")).save_pretrained(target)
    anchor = data.get("anchor_id")
    if anchor is None:
        anchor = "the tokenizer's BOS" if tokenizer is not None else "256, the built-in byte tokenizer's BOS (no tokenizer files)"
    rope = dict(module.hf_config.rope_parameters or {})
    (target / "ANCHOR.md").write_text(
        NOTE.format(mode=module.mode, backend=module.backend, seq_len=module.seq_len, rope=rope, anchor=anchor)
    )
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m anchor_lightning export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by `fit` (e.g. .../last.ckpt)")
    parser.add_argument("--out", required=True, help="the Hugging Face directory to write")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    print(f"exported to {export(args.ckpt, args.out, args.dtype)}")
