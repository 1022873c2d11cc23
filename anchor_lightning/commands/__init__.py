"""The command line: ``anchor-lightning VERB ...`` (or ``python -m anchor_lightning VERB ...``).

Every verb's front-end lives in this package (library code never imports it); every verb reports bad
input as one line on stderr with exit status 2, no traceback.

    fit        train on packed rows (LightningCLI: --config recipe.yaml [--config fragment.yaml] ...)
    validate   the validation loss of a model on a data config
    export     a training checkpoint as a Hugging Face directory
    inspect    what a data config packs: statistics and one row drawn
    prepare    tokenize and pack a config's data ahead of training
    evaluate   needle retrieval and perplexity of a checkpoint
    diagnose   BF16 RoPE's departure from relative positions (the paper's D)
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

from anchor_lightning.errors import RunWarning, UserError

# verb -> (module of this package, one line for --help); fit and validate share the LightningCLI
VERBS = {
    "fit": ("train", "train on packed rows (LightningCLI: --config recipe.yaml [--config fragment.yaml] ...)"),
    "validate": ("train", "the validation loss of a model on a data config"),
    "export": ("export", "a training checkpoint as a Hugging Face directory"),
    "inspect": ("inspect", "what a data config packs: statistics and one row drawn"),
    "prepare": ("prepare", "tokenize and pack a config's data ahead of training (CPU, no GPU)"),
    "evaluate": ("evaluate", "needle retrieval and perplexity of a checkpoint (a directory or .gguf)"),
    "diagnose": ("diagnose", "BF16 RoPE's departure from relative positions (the paper's D)"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    lines = [
        "usage: anchor-lightning VERB [options]   (or: python -m anchor_lightning VERB [options])",
        "",
        "Long-context continued pre-training of Hugging Face causal LMs with AnchorAttention.",
        "",
        "verbs:",
    ]
    lines += [f"  {verb:<{width}}  {text}" for verb, (_, text) in VERBS.items()]
    lines += ["", "anchor-lightning VERB --help shows a verb's options."]
    return "\n".join(lines)


def quiet_imports() -> None:
    """Import-time lines of optional packages that say nothing about the user's run, before any verb
    imports transformers (which imports torchao when it is installed): torchao's note that its own C++
    extensions (MX formats, CUTLASS kernels; FP8 training does not use them) do not load for this torch
    build, and torch's deprecation note on the pytree registrations torchao makes. Real warnings still show.
    Where standard error is not a terminal (a log file), the Hugging Face progress bars are off unless
    ``HF_HUB_DISABLE_PROGRESS_BARS`` says otherwise."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    if not sys.stderr.isatty():  # transformers' "Loading weights" bars, as carriage-return runs in a log file
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def one_line_warnings() -> None:
    """A run's own warnings (:class:`RunWarning`) print as one line, ``warning: ...``; any other keeps the
    format in place, with its source. Lightning sets its own format when it is imported (and takes this
    package's files, whose path holds "lightning", for its own), so it is imported first and ours wraps
    it; installed once however often ``main`` runs."""
    import lightning.fabric.utilities.warnings  # noqa: F401  (sets Lightning's format)

    previous = warnings.formatwarning
    if getattr(previous, "one_line_run_warnings", False):
        return

    def format_warning(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, RunWarning):
            return f"warning: {message}\n"
        return previous(message, category, filename, lineno, line)

    format_warning.one_line_run_warnings = True  # type: ignore[attr-defined]
    warnings.formatwarning = format_warning


def main(args: list[str] | None = None, run: bool = True):
    """Dispatch to a verb. ``run=False`` (tests, tools) parses and instantiates ``fit``'s classes only,
    with the arguments given without a verb."""
    quiet_imports()
    one_line_warnings()
    given = list(sys.argv[1:] if args is None else args)
    if not run:
        from anchor_lightning.commands.train import main as train

        return _one_line_errors(lambda: train(given, run=False))
    if not given or given[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if given else sys.stderr)
        sys.exit(0 if given else 2)
    verb = given[0]
    if verb not in VERBS:
        print(
            f"error: unknown verb {verb!r} (choose from {', '.join(VERBS)}; anchor-lightning --help)", file=sys.stderr
        )
        sys.exit(2)
    module = importlib.import_module(f"anchor_lightning.commands.{VERBS[verb][0]}")
    if verb in ("fit", "validate"):
        return _one_line_errors(lambda: module.main(given, run=True))
    return _one_line_errors(lambda: module.run(given[1:]))


def cli() -> None:
    """The ``anchor-lightning`` console script: :func:`main` with the process's arguments; the exit
    status is 0, or 2 for bad input."""
    main()


def _one_line_errors(call):
    try:
        return call()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
