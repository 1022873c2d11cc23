"""``anchor-lightning fit|validate --config recipe.yaml [--config fragment.yaml]``: LightningCLI.

A thin LightningCLI: the row length is given once (top-level ``seq_len``) and linked to the model and
the data; the model's attention mode and layout are linked to the data's packing. Before any work:
``--ckpt_path`` must name a readable checkpoint (``last``: one that exists; ``last-if-present``:
resume when there is one), and a new run never writes into a checkpoint directory that already holds
another run's checkpoints. The resolved config is saved beside the run's logs, never over a file the
user wrote. User errors print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import importlib.resources
import logging
import re
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path

import torch
import yaml
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from anchor_lightning.attention.backends import default_layout
from anchor_lightning.callbacks.preemption import SaveOnSignal, last_checkpoint_path
from anchor_lightning.callbacks.progress import PlainProgress, StepProgressBar
from anchor_lightning.callbacks.throughput import TokenThroughput
from anchor_lightning.checkpoint.reader import read_checkpoint
from anchor_lightning.data.datamodule import PackedDataModule
from anchor_lightning.errors import RunWarning, UserError, require_at_least
from anchor_lightning.messages import say
from anchor_lightning.model.module import AnchorLM
from anchor_lightning.paths import writable_directory


def interactive_output() -> bool:
    """Whether standard output is a terminal (a live progress bar) rather than a file or a pipe."""
    return sys.stdout.isatty()


def check_accelerator(accelerator: str) -> None:
    """A GPU recipe on a machine without one stops here, before the model is built, with one line
    (Lightning would say "No supported gpu backend found!" after it); availability is Lightning's own."""
    wanted = {"gpu": (CUDAAccelerator, MPSAccelerator), "cuda": (CUDAAccelerator,), "mps": (MPSAccelerator,)}
    if accelerator in wanted and not any(kind.is_available() for kind in wanted[accelerator]):
        raise UserError(
            f"{accelerator!r} asks for a GPU and this machine has none that torch can use; run it where one is, "
            "or on the CPU with --trainer.accelerator=cpu --trainer.precision=32-true (slow: for a check only)",
            field="trainer.accelerator",
        )


def resolve_layout(mode: str, backend: str, layout: str | None) -> str:
    return layout or default_layout(backend, mode)


def _config_files(args: list[str]) -> list[str]:
    """The ``--config``/``-c`` files named on the command line, in order."""
    files = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _file_setting(files: list[str], key: str) -> str | None:
    """The last config file that sets the dotted ``key``, if any."""
    found = None
    for name in files:
        try:
            node = yaml.safe_load(Path(name).read_text())
        except (OSError, yaml.YAMLError):
            continue
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            found = name
    return found


def config_error_line(message: str, args: list[str]) -> str:
    """A jsonargparse error as one line, naming the config file (or the command line) that set the key."""
    text = " ".join(str(message).split())
    key = None
    if text.startswith("Parser key") and text.count('"') >= 2:
        key = text.split('"')[1]
    elif "does not accept option '" in text:  # an unknown key
        key = text.split("does not accept option '", 1)[1].split("'", 1)[0]
    choices = re.findall(r"Expected a typing\.Literal\[([^\]]*)\]", text)
    if key is not None and choices:  # a choice out of a closed set: the choices, not jsonargparse's type dump
        allowed = [c.strip().strip("'\"") for c in choices[0].split(",")]
        if "Expected a <class 'NoneType'>" in text:
            allowed.append("null")
        given = re.search(r"Given value type: <class '\w+'> Given value: (\S+)", text)
        text = f'Parser key "{key}": {given.group(1) + " is " if given else ""}not one of {", ".join(allowed)}'
    if key is None:
        source = None
    elif any(a.startswith(f"--{key}") for a in args):
        source = "command line"
    else:
        source = _file_setting(_config_files(args), key)
    return f"{source}: {text}" if source else text


def data_parallel_size(trainer) -> int:
    """Ranks that read different rows: devices per node x nodes ("auto"/-1: every visible GPU), over
    the sequence-parallel group size."""
    devices = trainer.devices
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif str(devices) in ("auto", "-1"):
        gpu = str(trainer.accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        count = torch.cuda.device_count() if gpu else 1
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    else:
        count = int(devices)
    init_args = getattr(trainer.strategy, "init_args", None)  # a class_path strategy from the YAML
    sequence = int(getattr(init_args, "sequence_parallel_size", None) or 1)
    return count * int(trainer.num_nodes or 1) // sequence


def accumulation_for(global_batch: int, micro_batch: int, data_parallel: int) -> int:
    require_at_least(("data.global_batch_size", global_batch, 1), ("data.micro_batch_size", micro_batch, 1))
    per_pass = micro_batch * data_parallel
    if global_batch % per_pass:
        raise UserError(
            f"a global batch of {global_batch} rows is not a multiple of {micro_batch} rows x {data_parallel} devices",
            field="data.global_batch_size",
        )
    return global_batch // per_pass


RESUME_IF_PRESENT = "last-if-present"
SAVED_CONFIG_MARK = "# lightning.pytorch=="  # how LightningCLI opens the configs it saves


class SaveRunConfig(SaveConfigCallback):
    """The resolved config, saved in the run's log directory. Without a logger nothing is saved (the
    working directory is the user's), and a file that LightningCLI did not write is never replaced."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not trainer.loggers or trainer.log_dir is None:
            return
        path = Path(trainer.log_dir) / self.config_filename
        if trainer.is_global_zero and path.is_file() and not path.read_text().startswith(SAVED_CONFIG_MARK):
            warnings.warn(
                f"{path} exists and was not written by a run: the resolved config is not saved",
                category=RunWarning,
                stacklevel=1,
            )
            return
        super().setup(trainer, pl_module, stage)


SETTINGS_IN_NAMES = ("mode", "backend", "layout", "seq_len")


def _fill(text, values: dict, where: str):
    if not isinstance(text, str) or "{" not in text:
        return text
    try:
        return text.format_map(values)
    except (KeyError, ValueError, IndexError) as err:
        raise UserError(
            f"{text!r}: the names may use {', '.join('{' + k + '}' for k in SETTINGS_IN_NAMES)} ({err})", field=where
        ) from None


def name_by_settings(config) -> None:
    """Fill ``{mode}``, ``{backend}``, ``{layout}`` and ``{seq_len}`` in the logger's name/save_dir and in
    every callback's ``dirpath``, so that runs differing in those settings write to different places."""
    values = {
        "mode": config.model.mode,
        "backend": config.model.backend,
        "seq_len": config.seq_len,
        "layout": resolve_layout(config.model.mode, config.model.backend, config.model.layout),
    }
    loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
    for logger in loggers:
        init = getattr(logger, "init_args", None)
        for key in ("name", "save_dir", "version", "sub_dir"):
            if init is not None and key in init:
                init[key] = _fill(init[key], values, f"trainer.logger.init_args.{key}")
    for callback in config.trainer.callbacks or []:
        init = getattr(callback, "init_args", None)
        if init is not None and "dirpath" in init:
            init["dirpath"] = _fill(init["dirpath"], values, "trainer.callbacks.init_args.dirpath")


def checkpoint_directory(trainer) -> Path | None:
    callback = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    return Path(callback.dirpath) if callback is not None and callback.dirpath else None


class AnchorCLI(LightningCLI):
    _finished = False  # before_fit found the resumed run done: fit() trains nothing

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Only what the module implements: training and validation."""
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name in ("fit", "validate")}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--seq_len", type=int, default=512, help="Slots per packed row (linked to model and data).")
        parser.link_arguments("seq_len", "model.seq_len")
        parser.link_arguments("seq_len", "data.seq_len")
        parser.link_arguments("model.mode", "data.mode")
        parser.link_arguments(("model.mode", "model.backend", "model.layout"), "data.layout", compute_fn=resolve_layout)

    def _parse_ckpt_path(self) -> None:
        """Given a checkpoint file, LightningCLI replaces the command line's model settings with the
        checkpoint's hyper-parameters before building the model, so ``--model.mode=full`` would train the
        checkpoint's mode without a word. Here the command line stays as given, and the model compares its
        settings with the checkpoint's when it is loaded (``AnchorLM.on_load_checkpoint``): any that
        differ are refused in one line naming them."""

    def _instantiate_trainer(self, config: dict, callbacks: list):
        """Progress, unless disabled: on a terminal Lightning's bar (counting right under gradient
        accumulation), elsewhere (a log file, SLURM, CI) plain lines at logging steps."""
        if config.get("enable_progress_bar") is not False:
            if interactive_output():
                callbacks = [*callbacks, StepProgressBar()]
            else:
                config = {**config, "enable_progress_bar": False}
                callbacks = [*callbacks, PlainProgress()]
        try:
            return super()._instantiate_trainer(config, callbacks)
        except MisconfigurationException as err:  # Lightning's word on the trainer settings, as one line
            raise UserError(" ".join(str(err).split()), field="trainer") from None

    def before_instantiate_classes(self) -> None:
        """A pretrained checkpoint directory brings its tokenizer unless one is named; a global batch
        size sets gradient accumulation from the number of devices (and says so where that replaces
        another value)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_accelerator(str(config.trainer.accelerator))
        name_by_settings(config)
        if config.data.tokenizer is None and config.model.pretrained is not None:
            config.data.tokenizer = config.model.pretrained
        require_at_least(("trainer.accumulate_grad_batches", config.trainer.accumulate_grad_batches, 1))
        if config.data.global_batch_size is not None:
            devices = data_parallel_size(config.trainer)
            given = config.trainer.accumulate_grad_batches
            config.trainer.accumulate_grad_batches = accumulation_for(
                config.data.global_batch_size, config.data.micro_batch_size, devices
            )
            if given != 1 and given != config.trainer.accumulate_grad_batches:  # a recipe's value, replaced aloud
                say(
                    f"trainer.accumulate_grad_batches {given} -> {config.trainer.accumulate_grad_batches}: "
                    f"data.global_batch_size {config.data.global_batch_size} = {config.data.micro_batch_size} rows "
                    f"x {devices} devices x {config.trainer.accumulate_grad_batches} micro-batches"
                )

    def _checked_ckpt_path(self) -> str | None:
        """``--ckpt_path`` resolved and checked before any work: ``last`` must exist, ``last-if-present``
        becomes ``last`` or nothing, a file must be a readable checkpoint."""
        given = self.config_init[self.subcommand].get("ckpt_path")
        if given is None:
            return None
        if given in ("last", RESUME_IF_PRESENT):
            last = Path(last_checkpoint_path(self.trainer))
            if last.exists():
                return "last"
            if given == RESUME_IF_PRESENT:
                return None
            raise UserError(
                f"nothing to resume: {last} does not exist (drop --ckpt_path to start afresh, or "
                f"--ckpt_path {RESUME_IF_PRESENT} to resume only when there is one)",
                field="--ckpt_path",
            )
        if Path(given).is_dir():  # a sharded (FSDP) checkpoint: torch.distributed.checkpoint's metadata
            if not (Path(given) / ".metadata").is_file():
                raise UserError(
                    "a directory, not a checkpoint (a sharded one holds a .metadata file): give the checkpoint "
                    "file (.../last.ckpt) or 'last'",
                    file=given,
                    field="--ckpt_path",
                )
            return given
        read_checkpoint(given)
        return given

    def _check_output_directories(self) -> None:
        """The log and checkpoint directories take files (a read-only place stops the run now, not at
        the first save)."""
        for logger in self.trainer.loggers:
            root = getattr(logger, "root_dir", None) or getattr(logger, "save_dir", None)
            if root:
                writable_directory(root, "trainer.logger")
        directory = checkpoint_directory(self.trainer)
        if directory is not None:
            writable_directory(directory, "ModelCheckpoint.dirpath")

    def before_fit(self) -> None:
        ckpt_path = self._checked_ckpt_path()
        self.config_init[self.subcommand]["ckpt_path"] = ckpt_path
        if ckpt_path is not None and not Path(ckpt_path).is_dir():
            path = last_checkpoint_path(self.trainer) if ckpt_path == "last" else ckpt_path
            done = read_checkpoint(path).get("global_step", 0)
            if self.trainer.max_steps is not None and 0 < self.trainer.max_steps <= done:
                say(f"{path} has finished its {done} steps: nothing to train (raise --trainer.max_steps to go on)")
                self._finished = True
        self._check_output_directories()
        directory = checkpoint_directory(self.trainer)
        if ckpt_path is None and directory is not None and directory.is_dir():
            held = sorted(p.name for p in directory.iterdir() if p.name.endswith(".ckpt"))
            if held:
                raise UserError(
                    f"already holds checkpoints of another run ({', '.join(held[:3])}{' ...' if len(held) > 3 else ''}): "
                    "resume it with --ckpt_path last, or give this run its own directory "
                    "(ModelCheckpoint's dirpath, or remove the old one)",
                    file=str(directory),
                )

    def fit(self, **kwargs) -> None:
        """LightningCLI runs a method named after the subcommand in place of ``Trainer.fit``: a resume of
        a run that has finished its steps stops after saying so, without restoring and summarizing."""
        if not self._finished:
            self.trainer.fit(**kwargs)

    def before_validate(self) -> None:
        self.config_init[self.subcommand]["ckpt_path"] = self._checked_ckpt_path()


def trainer_defaults() -> dict:
    """Fresh default callbacks for every CLI run (callbacks keep per-run state)."""
    return {
        "logger": {"class_path": "anchor_lightning.loggers.TensorBoard", "init_args": {"save_dir": "runs"}},
        "callbacks": [TokenThroughput(), SaveOnSignal()],
        "plugins": [{"class_path": "anchor_lightning.checkpoint.atomic_io.AtomicCheckpointIO"}],
        # the data module's sampler already splits rows over ranks (and knows each step's global targets)
        "use_distributed_sampler": False,
    }


def quiet_lightning() -> None:
    """Lightning's start-up lines (accelerators found, seed set, a tip) would precede every one-line
    error; the run's own banner (callbacks/progress.py) says what matters. Warnings still show."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning 2.6 under torch >= 2.10 warns about its own use of a deprecated pytree API on every run
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def shipped_config(path: str) -> str:
    """``recipes/...`` and ``conf/...`` name the files shipped with the package when no such file is in
    the working directory (after ``pip install``, or run from outside a clone)."""
    if Path(path).exists() or Path(path).parts[:1] not in (("recipes",), ("conf",)):
        return path
    installed = Path(str(importlib.resources.files("anchor_lightning"))) / path
    checkout = Path(__file__).resolve().parents[2] / path
    return str(next((p for p in (installed, checkout) if p.is_file()), path))


def with_shipped_configs(args: list[str]) -> list[str]:
    out = list(args)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = shipped_config(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + shipped_config(arg.split("=", 1)[1])
    return out


def check_config_files(args: list[str]) -> None:
    """Every ``--config`` file exists and is YAML, named with the line of a syntax error (jsonargparse
    reports those without the file)."""
    for name in _config_files(args):
        path = Path(name)
        if not path.is_file():
            raise UserError("no such config file", file=name, field="--config")
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise UserError(f"YAML syntax error: {problem}", file=name, line=mark.line + 1 if mark else None) from None
        if not isinstance(content, dict):
            what = "empty" if content is None else f"a YAML {type(content).__name__}"
            raise UserError(
                f"{what}, not a recipe: a recipe is a mapping of settings (model:, data:, trainer: ...)",
                file=name,
                field="--config",
            )


def check_named_checkpoint(args: list[str]) -> None:
    """A checkpoint file named on the command line is readable before LightningCLI opens it (it reads
    the checkpoint's hyper-parameters while parsing, and would stop there with a traceback)."""
    for i, arg in enumerate(args):
        value = (
            arg.split("=", 1)[1]
            if arg.startswith("--ckpt_path=")
            else args[i + 1]
            if arg == "--ckpt_path" and i + 1 < len(args)
            else None
        )
        if value and value not in ("last", "best", "hpc", RESUME_IF_PRESENT) and not Path(value).is_dir():
            read_checkpoint(value)


def main(args: list[str] | None = None, run: bool = True, verb: str = "fit") -> AnchorCLI | None:
    """``fit`` / ``validate`` (``run=False``: parse and instantiate only, for tests and tools; ``verb``: the
    command whose fit options these are, named in a bad option's line)."""
    given = with_shipped_configs(list(sys.argv[1:] if args is None else args))
    # The data module places its sampler after the last trained step itself (data/datamodule.py,
    # _resume_position); Lightning cannot see that and would warn on every mid-epoch resume.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # the front-end passes them on purpose
    quiet_lightning()
    try:
        check_config_files(given)
        check_named_checkpoint(given)
        return AnchorCLI(
            AnchorLM,
            PackedDataModule,
            args=given,
            run=run,
            trainer_defaults=trainer_defaults(),
            save_config_callback=SaveRunConfig,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,  # the module builds its optimizer and per-step schedule
            # raise instead of printing the whole usage: the front-end prints one line
            parser_kwargs={"exit_on_error": False},
        )
    except ArgumentError as err:
        see = "fit --help" if verb == "fit" else f"{verb} --help for its own options, fit --help for the rest"
        raise UserError(f"{config_error_line(str(err), given)} (see anchor-lightning {see})") from None
