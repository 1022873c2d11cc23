"""The data module's loaders as a CUDA run gets them."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from anchor_lightning.data.datamodule import PackedDataModule


def test_a_cuda_run_reads_rows_in_workers_without_a_pinning_thread(tmp_path):
    """A pinning thread calls torch.set_num_threads(1) and the CUDA autograd thread starts with that
    count, so compiled regions recomputed under activation checkpointing recompiled there and, past
    the recompile limit, ran eagerly where the forward ran compiled (datamodule._loader)."""
    data = PackedDataModule(seq_len=256, cache_dir=str(tmp_path), num_workers=1)
    data.trainer = SimpleNamespace(  # what the loaders read of a one-GPU Trainer
        strategy=SimpleNamespace(root_device=torch.device("cuda")),
        world_size=1,
        global_rank=0,
        accumulate_grad_batches=1,
    )
    data.setup("fit")
    for loader in (data.train_dataloader(), data.val_dataloader()):
        assert loader.num_workers == 1 and loader.pin_memory is False
    assert next(iter(data.train_dataloader()))["input_ids"].shape[-1] == 256
