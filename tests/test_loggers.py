"""The one TensorBoard reader (loggers.read_scalars): every event file of a run, a resumed step's last write."""

from __future__ import annotations

import time

from torch.utils.tensorboard import SummaryWriter

from anchor_lightning.loggers import read_scalars


def test_read_scalars_merges_event_files_and_keeps_a_restarted_steps_last_value(tmp_path):
    first = SummaryWriter(tmp_path / "version_9")
    for step, loss in [(1, 4.0), (2, 3.0), (3, 2.5)]:
        first.add_scalar("train/loss", loss, step)
    first.add_scalar("val/loss", 3.3, 2)
    first.close()
    time.sleep(0.01)  # the restart (version_10 sorts before version_9 by name) writes later
    resumed = SummaryWriter(tmp_path / "version_10")  # resumed from the step-2 checkpoint: logs step 3 again
    for step, loss in [(3, 2.4), (4, 2.0)]:
        resumed.add_scalar("train/loss", loss, step)
    resumed.close()

    scalars = read_scalars(tmp_path)

    assert [(s, round(v, 4)) for s, v, _ in scalars["train/loss"]] == [(1, 4.0), (2, 3.0), (3, 2.4), (4, 2.0)]
    assert [(s, round(v, 4)) for s, v, _ in scalars["val/loss"]] == [(2, 3.3)]
    walls = [w for _, _, w in scalars["train/loss"]]
    assert walls == sorted(walls)


def test_read_scalars_of_a_folder_without_events_is_empty(tmp_path):
    assert read_scalars(tmp_path) == {}
