"""Test helpers: callbacks that interrupt or poison a run at a chosen optimizer step, checkpoint and
logit helpers, and the environment of a GPU-call script run on this machine."""

from __future__ import annotations

import os
import signal

import lightning as L
import torch


class SignalAtStep(L.Callback):
    """Send ``signum`` to this process in the middle of optimizer step ``step`` (before its forward)."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM)) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and batch_idx % trainer.accumulate_grad_batches == 0:
            os.kill(os.getpid(), self.signum)


class KillDuringSave(L.Callback):
    """SIGKILL this process half-way through writing the checkpoint of optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.global_step != self.step:
            return
        real_save = torch.save

        def half_then_die(obj, f, *args, **kwargs):
            real_save({"partial": b"x" * 1_000_000}, f)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_die


class NanGradientAtStep(L.Callback):
    """Make one gradient non-finite at optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.fill_(float("nan"))


class StopAtStep(L.Callback):
    """Stop the run (as an interruption would) once optimizer step ``step`` is done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class RecordProgressTotal(L.Callback):
    """Remember the progress bar's total and description at the start of each training epoch, and its
    count and shown metrics at the end of training."""

    seen: list[tuple[float, str]] = []
    end: dict = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        bar = trainer.progress_bar_callback
        RecordProgressTotal.seen.append((bar.total_train_batches, bar._get_train_description(trainer.current_epoch)))

    def on_train_end(self, trainer, pl_module) -> None:
        bar = trainer.progress_bar_callback
        task = bar.progress.tasks[bar.train_progress_bar_id] if getattr(bar, "progress", None) is not None else None
        RecordProgressTotal.end = {
            "metrics": bar.get_metrics(trainer, pl_module),
            "completed": task.completed if task else None,
        }


def checkpoint_fragment(tmp_path, directory, logs=None) -> str:
    """A config fragment that saves last.ckpt to ``directory`` (and TensorBoard logs to ``logs``)."""
    import yaml

    trainer = {
        "enable_checkpointing": True,
        "callbacks": [
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"dirpath": str(directory), "save_last": True},
            }
        ],
    }
    if logs is not None:
        trainer["logger"] = {"class_path": "anchor_lightning.loggers.TensorBoard", "init_args": {"save_dir": str(logs)}}
    fragment = tmp_path / f"checkpoint-{abs(hash(str(directory)))}.yaml"
    fragment.write_text(yaml.safe_dump({"trainer": trainer}))
    return str(fragment)


FRESH = """
import json, sys
import numpy as np, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor([json.loads(sys.argv[2])])
with torch.no_grad():
    logits = model(input_ids=ids).logits[0]
np.save(sys.argv[3], logits.numpy())
assert not any(name.startswith("anchor_lightning") for name in sys.modules), "imported anchor_lightning"
print(model.config._attn_implementation)
"""


def module_logits(ckpt: str, ids: list[int], layout: str, first: int, strip: tuple[int, ...]):
    """The trained module's logits for one document that opens with F, packed as training packs it
    (anchor mode: positions 0, 1, 2 ..., as plain causal inference numbers them)."""
    from anchor_lightning.checkpoint.reader import read_checkpoint
    from anchor_lightning.data.batch import collate_rows
    from anchor_lightning.data.packing import PackingSpec, pack_documents
    from anchor_lightning.model.module import AnchorLM

    checkpoint = read_checkpoint(ckpt)
    # the training module as fit built it (LightningCLI keeps its "_instantiator" beside the arguments)
    module = AnchorLM(**{k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")})
    module.configure_model()
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    rows, _ = pack_documents([ids], PackingSpec(len(ids), layout, first, strip))
    with torch.no_grad():
        hidden = module.hidden_states(collate_rows(rows, "anchor", layout))
        return (hidden @ module.model.get_output_embeddings().weight.t())[0].numpy()


def fresh_process_logits(directory, ids: list[int], tmp_path):
    """Logits of an exported directory in a fresh process with plain transformers only (asserted), and
    the attention implementation it loaded with."""
    import json
    import subprocess
    import sys

    import numpy as np

    out = tmp_path / "logits.npy"
    result = subprocess.run(
        [sys.executable, "-c", FRESH, str(directory), json.dumps(ids), str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out), result.stdout.strip().splitlines()[-1]


def script_env(tmp_path, out, **folders: str) -> dict:
    """The environment of a scripts/*.sh GPU-call script run here: ``OUT`` (the files that come back)
    and every other machine path it reads (``NAME="folder"``) inside ``tmp_path``, so it touches
    neither /tmp's real set-up nor the working tree."""
    return {**os.environ, "OUT": str(out), **{name: str(tmp_path / folder) for name, folder in folders.items()}}


def record_whole_writes(monkeypatch, *modules) -> list[str]:
    """The names of the files written through ``paths.atomic_write`` or ``paths.write_figure`` (whole or
    not at all) by ``modules``, which import those functions by name: the list fills as they run."""
    from anchor_lightning import paths

    written: list[str] = []

    def write(target, data):
        written.append(os.path.basename(target))
        return paths.atomic_write(target, data)

    def figure(fig, target, **savefig):
        written.append(os.path.basename(target))
        return paths.write_figure(fig, target, **savefig)

    for module in modules:
        for name, spy in (("atomic_write", write), ("write_figure", figure)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, spy)
    return written
