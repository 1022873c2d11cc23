"""lab/pieces.py: a file cut into pieces joins back into the same bytes, and only when they match its
sha256 is the joined file put in place."""

from __future__ import annotations

import hashlib

import pytest

from anchor_lightning.errors import UserError
from lab import pieces


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 3500])
def test_cut_pieces_join_into_the_same_bytes(tmp_path, size):
    source = tmp_path / "file.bin"
    data = bytes((i * 7) % 251 for i in range(size))
    source.write_bytes(data)
    made = pieces.cut(source, 1000, lambda i: tmp_path / f"carry{i % 2}" / f"file.{i:02d}")
    assert len(made) == pieces.count(size, 1000) == max(1, -(-size // 1000))
    assert all(p.stat().st_size <= 1000 for p in made) and b"".join(p.read_bytes() for p in made) == data
    joined = pieces.join(made, tmp_path / "back" / "file.bin", hashlib.sha256(data).hexdigest())
    assert joined.read_bytes() == data


def test_pieces_that_do_not_match_leave_the_target_as_it_was(tmp_path):
    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"GG")
    parts[1].write_bytes(b"UF")
    target = tmp_path / "model.gguf"
    target.write_bytes(b"old")
    with pytest.raises(UserError, match="model.gguf: its 2 pieces do not join to the expected sha256"):
        pieces.join(parts, target, hashlib.sha256(b"GGUF!").hexdigest())
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "model.gguf"]
    with pytest.raises(UserError, match="1 pieces missing"):
        pieces.join([parts[0], tmp_path / "c"], target, hashlib.sha256(b"GG").hexdigest())


def test_the_command_line_cuts_into_exactly_the_names_given_and_joins_checked(tmp_path, capsys):
    source = tmp_path / "f"
    source.write_bytes(b"x" * 25)
    assert pieces.main(["cut", str(source), "--piece-bytes", "10", str(tmp_path / "p0"), str(tmp_path / "p1")]) == 2
    assert "25 bytes make 3 pieces of at most 10, and 2 names were given" in capsys.readouterr().err
    names = [str(tmp_path / f"p{i}") for i in range(3)]
    assert pieces.main(["cut", str(source), "--piece-bytes", "10", *names]) == 0
    sha = hashlib.sha256(b"x" * 25).hexdigest()
    assert pieces.main(["join", "--sha256", sha, "--into", str(tmp_path / "g"), *names]) == 0
    assert (tmp_path / "g").read_bytes() == b"x" * 25
    assert pieces.main(["join", "--sha256", "0" * 64, "--into", str(tmp_path / "h"), *names]) == 2
    assert not (tmp_path / "h").exists()
