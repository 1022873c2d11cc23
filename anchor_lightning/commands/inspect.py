"""``anchor-lightning inspect``: what a data config packs, statistics and one row drawn.

    anchor-lightning inspect --config recipes/debug/tiny-cpu.yaml [--row 3] [--part val] [--width 64]

Any ``fit`` option may follow (``--seq_len=1024``, ``--model.mode=full`` ...). Only the data is built
(on the CPU, whatever the recipe's accelerator): the packing statistics (rows, documents per row,
chunks split, tokens stripped, padding), then one row: its packed documents with the start of their
decoded text, and its attention mask (one character per block of slots: ``#`` where some query may
attend to some key, ``.`` where none may) with positions.
"""

from __future__ import annotations

import warnings

from anchor_lightning.commands.arguments import FIT_OPTIONS, VerbParser, at_least
from anchor_lightning.data.inspect import describe

# the data alone: no accelerator, no logger, no checkpoints (a GPU recipe works on any machine)
DATA_ONLY = [
    "--trainer.logger=false",
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.callbacks=null",
    "--trainer.enable_checkpointing=false",
    "--trainer.precision=32-true",
]


def parser() -> VerbParser:
    p = VerbParser("inspect", __doc__.split("\n\n")[0].split(": ", 1)[1], FIT_OPTIONS)
    p.add_argument("--row", type=at_least(0), default=0, help="which packed row to draw")
    p.add_argument("--part", choices=["train", "val"], default="train")
    p.add_argument("--width", type=at_least(1), default=64, help="characters per side of the mask drawing")
    return p


def data_module(fit_argv: list[str], verb: str = "inspect"):
    """The data module of a ``fit`` command line, built alone (``DATA_ONLY``): no model is trained.
    ``verb`` is the command that reads it (its name in the hint of a bad option's line)."""
    from anchor_lightning.commands.train import main as train_main

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # args are ours on purpose
        cli = train_main(fit_argv + DATA_ONLY, run=False, verb=verb)
    assert cli is not None, "main(run=False) returns the CLI"
    return cli.datamodule


def run(argv: list[str]) -> None:
    own, rest = parser().parse_known_args(argv)
    data = data_module(rest, "inspect")
    data.setup("fit")
    print(describe(data, own.part, own.row, own.width))
