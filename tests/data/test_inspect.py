"""The data inspection command: statistics and an exact block drawing of the mask."""

from __future__ import annotations

import numpy as np
import pytest

from anchor_lightning.attention.masks import dense_mask
from anchor_lightning.commands import main
from anchor_lightning.data.inspect import block_mask
from tests.conftest import packed_batch


@pytest.mark.parametrize(
    "mode,layout", [("anchor", "shared"), ("anchor", "per_doc"), ("intra_doc", "per_doc"), ("full", "per_doc")]
)
def test_block_mask_at_one_slot_per_cell_is_the_dense_mask(mode, layout):
    batch, _ = packed_batch([[1, 5, 6, 7], [1, 8, 9], [1, 10, 11, 12, 13]], 16, mode, layout)
    drawn = block_mask(batch["doc_ids"][0].numpy(), mode, layout, width=16)
    dense = dense_mask(batch["doc_ids"], mode, layout)[0, 0]
    assert np.array_equal(np.array([[c == "#" for c in line] for line in drawn]), dense.numpy())


def test_block_mask_marks_a_block_when_any_pair_is_allowed():
    doc_ids = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    assert block_mask(doc_ids, "intra_doc", "per_doc", width=4) == ["#...", ".#..", "..#.", "..##"]


def test_inspect_command_prints_statistics_and_a_row(tmp_path, capsys):
    main(
        [
            "inspect",
            "--config",
            "tests/configs/micro.yaml",
            f"--data.cache_dir={tmp_path}",
            "--row",
            "1",
            "--width",
            "16",
        ]
    )
    out = capsys.readouterr().out
    assert "train: " in out and "rows of 256 slots, mode anchor, layout shared" in out
    assert "0 dropped" in out and "documents per row: mean" in out
    assert "row 1: " in out and "source document" in out
    mask = [line.strip() for line in out.splitlines() if set(line.strip()) <= {"#", "."} and len(line.strip()) == 16]
    assert len(mask) == 16 and all(line[0] == "#" for line in mask)  # the shared anchor column
