"""``python -m anchor_lightning fit|validate --config recipe.yaml [--config fragment.yaml]``.

A thin LightningCLI: the row length is given once (top-level ``seq_len``) and linked to the model and
the data; the model's attention mode and layout are linked to the data's packing. User errors print
one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from anchor_lightning.attention.backends import default_layout
from anchor_lightning.callbacks.throughput import TokenThroughput
from anchor_lightning.data.datamodule import PackedDataModule
from anchor_lightning.errors import UserError
from anchor_lightning.model.module import AnchorLM


def resolve_layout(backend: str, layout: str | None) -> str:
    return layout or default_layout(backend)


class AnchorCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--seq_len", type=int, default=512, help="Slots per packed row (linked to model and data).")
        parser.link_arguments("seq_len", "model.seq_len")
        parser.link_arguments("seq_len", "data.seq_len")
        parser.link_arguments("model.mode", "data.mode")
        parser.link_arguments(("model.backend", "model.layout"), "data.layout", compute_fn=resolve_layout)


TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "runs"}},
    "callbacks": [TokenThroughput()],
    # the data module's sampler already splits rows over ranks (and knows each step's global targets)
    "use_distributed_sampler": False,
}


def main(args: list[str] | None = None) -> AnchorCLI | None:
    try:
        return AnchorCLI(
            AnchorLM,
            PackedDataModule,
            args=args,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_kwargs={"overwrite": True},
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)

