"""``anchor-lightning export``: a training checkpoint as a Hugging Face directory.

    anchor-lightning export --ckpt_path checkpoints/.../last.ckpt --out exported/ [--dtype bfloat16]

The directory loads with transformers alone (weights, config, tokenizer) and holds ``ANCHOR.md``, which
says how the model was trained and exactly how to feed it (its first token F at position 0).
"""

from __future__ import annotations

from anchor_lightning.commands.arguments import VerbParser
from anchor_lightning.model.export import export


def parser() -> VerbParser:
    p = VerbParser("export", __doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--ckpt_path", "--ckpt", required=True, help="a checkpoint written by `fit` (e.g. .../last.ckpt)")
    p.add_argument("--out", required=True, help="the Hugging Face directory to write (new, or an earlier export)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    return p


def run(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    print(f"exported to {export(args.ckpt_path, args.out, args.dtype)}")
