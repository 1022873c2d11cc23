"""Files written whole or not at all (anchor_lightning/paths.py): results, and figures."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from anchor_lightning.paths import atomic_write, write_figure  # noqa: E402


class Broken(Exception):
    pass


def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_stray(tmp_path, monkeypatch):
    target = atomic_write(tmp_path / "result.json", '{"old": true}')

    def fail(fd):  # the bytes are in the temporary file, not yet renamed over the target
        raise Broken

    monkeypatch.setattr("anchor_lightning.paths.os.fsync", fail)
    with pytest.raises(Broken):
        atomic_write(target, '{"new": true, "long": "' + "x" * 100_000 + '"}')
    assert target.read_text() == '{"old": true}' and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_figure_is_a_whole_png_and_a_failed_one_keeps_the_old(tmp_path, monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = write_figure(fig, tmp_path / "figure.png", dpi=50)
    old = path.read_bytes()
    assert old[:8] == b"\x89PNG\r\n\x1a\n"
    ax.plot([0, 1], [0, 1])

    def fail(fd):
        raise Broken

    monkeypatch.setattr("anchor_lightning.paths.os.fsync", fail)
    with pytest.raises(Broken):
        write_figure(fig, path, dpi=50)
    plt.close(fig)
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["figure.png"]
