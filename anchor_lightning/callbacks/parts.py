"""The parts of a run that our callbacks read, typed: the training module (:class:`AnchorLM`) and its
data module (:class:`PackedDataModule`). Lightning hands callbacks a plain ``LightningModule`` and
attaches ``trainer.datamodule`` at run time; these say in one line when a callback of ours is put on
a run that is not ours, instead of failing on a missing attribute mid-run."""

from __future__ import annotations

import contextlib

import lightning as L

from anchor_lightning.callbacks.throughput import TokenThroughput
from anchor_lightning.data.datamodule import PackedDataModule
from anchor_lightning.model.module import AnchorLM


def anchor_module(pl_module: L.LightningModule) -> AnchorLM:
    if not isinstance(pl_module, AnchorLM):
        raise TypeError(f"this callback needs anchor_lightning's AnchorLM, not {type(pl_module).__name__}")
    return pl_module


def packed_data(trainer: L.Trainer) -> PackedDataModule:
    data = getattr(trainer, "datamodule", None)  # attached by Lightning at run time (not in its types)
    if not isinstance(data, PackedDataModule):
        raise TypeError(f"this callback needs anchor_lightning's PackedDataModule, not {type(data).__name__}")
    return data


def trainer_callbacks(trainer: L.Trainer) -> list[L.Callback]:
    return getattr(trainer, "callbacks", [])  # attached by Lightning at run time (not in its types)


def outside_training(trainer: L.Trainer) -> contextlib.AbstractContextManager:
    """A block that is not training time: the throughput callback, if the run has one, leaves it out of
    tokens/s and MFU (an evaluation between steps would otherwise read as a slow step)."""
    clock = next((c for c in trainer_callbacks(trainer) if isinstance(c, TokenThroughput)), None)
    return clock.paused() if clock is not None else contextlib.nullcontext()
