"""lab/gpu/gpu_install.py: the wheels of the README's GPU install split into carries and joined back
into the very files (sha256), a corrupted or missing piece stopping the walk."""

from __future__ import annotations

import json
import random

import pytest

from lab.gpu import gpu_install


def test_the_plan_covers_every_byte_once_within_the_limits():
    sizes = {"big.whl": 230, "mid.whl": 90, "small.whl": 7, "empty.whl": 0}
    carries = gpu_install.plan(sizes, piece_bytes=100, carry_bytes=120)
    assert all(sum(length for *_, length in carry) <= 120 for carry in carries)
    for name, size in sizes.items():
        spans = sorted((start, length) for carry in carries for n, _, start, length in carry if n == name)
        assert all(length <= 100 for _, length in spans)
        assert [s for s, _ in spans] == list(range(0, max(size, 1), 100))
        assert sum(length for _, length in spans) == size
    with pytest.raises(ValueError, match="does not fit a carry"):
        gpu_install.plan(sizes, piece_bytes=200, carry_bytes=120)


def test_packed_pieces_join_into_the_same_files_and_a_bad_piece_stops(tmp_path):
    rng = random.Random(0)
    download = tmp_path / "download"
    download.mkdir()
    for name, size in (("a-1.whl", 2500), ("b-2.whl", 900), ("c-3.whl", 40)):
        (download / name).write_bytes(rng.randbytes(size))
    made = gpu_install.pack(download, tmp_path / "carry", piece_bytes=1000, carry_bytes=1200)
    assert [p.name for p in made] == ["1", "2", "3", "4"]  # 1000, 1000, 900, then 500 + 40
    assert all(sum(f.stat().st_size for f in d.iterdir() if f.name != "manifest.json") <= 1200 for d in made)
    pieces, wheelhouse = tmp_path / "pieces", tmp_path / "wheelhouse"
    with pytest.raises(SystemExit, match="no manifest.json staged"):
        gpu_install.join(pieces, wheelhouse)
    gpu_install.stage(tmp_path / "carry", pieces)  # every carry at once; on the machine, one a call
    joined = gpu_install.join(pieces, wheelhouse)
    assert sorted(p.name for p in joined) == ["a-1.whl", "b-2.whl", "c-3.whl"]
    assert all((wheelhouse / p.name).read_bytes() == (download / p.name).read_bytes() for p in joined)
    manifest = json.loads((pieces / "manifest.json").read_text())
    assert manifest["a-1.whl"]["pieces"] == ["a-1.whl.00", "a-1.whl.01", "a-1.whl.02"]
    (pieces / "a-1.whl.01").write_bytes(b"x" * 1000)
    with pytest.raises(SystemExit, match="a-1.whl: its 3 pieces do not join to the expected sha256 \\(PyPI's\\)"):
        gpu_install.join(pieces, wheelhouse)
    (pieces / "a-1.whl.01").unlink()
    with pytest.raises(SystemExit, match="1 pieces not staged yet"):
        gpu_install.join(pieces, wheelhouse)


def test_the_wheels_are_the_gpu_extras_pins():
    import tomllib

    ROOT = gpu_install.ROOT
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    pins = {requirement.split("[")[0].split("==")[0] + "==" + requirement.split("==")[1] for requirement in extra}
    assert pins <= set(gpu_install.WHEELS), pins - set(gpu_install.WHEELS)
