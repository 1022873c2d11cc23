"""What every verb's options share: one flag style and one-line errors.

Flags are written with underscores, as LightningCLI writes them (``--ckpt_path``, ``--seq_len``); the
same name with dashes is accepted too (``--ppl-data`` for ``--ppl_data``). A parse error becomes a
:class:`UserError`, which the front-end prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

import torch

from anchor_lightning.errors import RunWarning, UserError


class VerbParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and whose flags take both spellings."""

    def __init__(self, verb: str, description: str, epilog: str | None = None) -> None:
        super().__init__(
            prog=f"anchor-lightning {verb}",
            description=description,
            epilog=epilog,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )

    def add_argument(self, *names, **kwargs):
        spellings = list(names)
        for name in names:
            if name.startswith("--") and "_" in name[2:]:
                spellings.append("--" + name[2:].replace("_", "-"))
        if spellings[0].startswith("--") and "dest" not in kwargs:
            kwargs["dest"] = spellings[0][2:]
        return super().add_argument(*spellings, **kwargs)

    def error(self, message: str):
        raise UserError(f"{message} (see anchor-lightning {self.prog.split()[-1]} --help)")


# the verbs that read a fit command line besides their own options (inspect, prepare)
FIT_OPTIONS = (
    "Every other option is fit's, as a fit command line gives it: --config recipe.yaml [--config fragment.yaml], "
    "--data.*, --model.*, --seq_len (anchor-lightning fit --help lists them)."
)


def at_least(minimum: float, kind: type = int, maximum: float | None = None):
    """An argparse ``type`` that reads ``kind`` in [``minimum``, ``maximum``]: a bad value stops before any
    work, as ``argument --flag: 0 is below 1`` (one line, through :meth:`VerbParser.error`)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is above {maximum}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_run_arguments(parser: VerbParser, out: str, seed_help: str = "random seed") -> None:
    """What ``evaluate`` and ``diagnose`` share besides the corpus: the RoPE base, the device, the seed,
    the output directory and the progress switch."""
    import torch

    parser.add_argument(
        "--rope_theta", type=at_least(1e-6, float), default=None, help="replace the checkpoint's RoPE base"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    parser.add_argument("--out", default=out, help="the directory the results go to")
    parser.add_argument(
        "--no_progress",
        action="store_true",
        default=not sys.stderr.isatty(),  # a log file gets plain lines, as fit's progress does
        help="plain progress lines instead of bars (the default where stderr is not a terminal: log files)",
    )


def add_corpus_arguments(parser: VerbParser) -> None:
    """The text a tool reads (``diagnose``, ``evaluate``): a corpus, its tokenizer and the first token."""
    parser.add_argument("--data", default="default:2000", help="a JSONL corpus (text or pre-tokenized), or default:N")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer directory or .gguf (default: the model's, else bytes)"
    )
    parser.add_argument(
        "--first_token", type=at_least(0), default=None, help="the anchor / BOS id (default: the tokenizer's BOS)"
    )


def add_lengths_argument(parser: VerbParser, minimum: int, default: str) -> None:
    """``--lengths``: the context lengths a verb evaluates (``default`` says what it does without them;
    :func:`lengths_to_run` resolves them once the model is loaded)."""
    parser.add_argument(
        "--lengths", type=at_least(minimum), nargs="+", default=None, help=f"context lengths (default: {default})"
    )


def lengths_to_run(
    config, asked: list[int] | None, device: str, default: Callable[[int | None, str], list[int]]
) -> list[int]:
    """The context lengths a verb evaluates: those asked for, else the verb's ``default`` for the model's
    trained length (``max_position_embeddings``) and device; a warning when they exceed that length."""
    trained = getattr(config, "max_position_embeddings", None)
    lengths = list(asked or default(trained, torch.device(device).type))
    if trained and max(lengths) > trained:
        warnings.warn(
            f"lengths up to {max(lengths)} exceed the model's max_position_embeddings ({trained})",
            category=RunWarning,
            stacklevel=2,
        )
    return lengths
