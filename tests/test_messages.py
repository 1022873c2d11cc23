"""What a run prints for its user: numbers as read, and progress as plain lines in a log file."""

from __future__ import annotations

from anchor_lightning.messages import Count, number


def test_numbers_read_as_a_person_writes_them():
    assert [number(v) for v in (2236068.0, 10000, 1e7, 0.5)] == ["2,236,068", "10,000", "10,000,000", "0.5"]


def test_plain_progress_lines_in_a_log_file_and_none_for_short_work(capsys):
    with Count(4, "needles", "trial", bar=False, every=0.0) as count:
        for _ in range(4):
            count.update()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[:3]] == [f"needles: {k} of 4 trials" for k in (1, 2, 3)]
    assert all(" left (elapsed " in line for line in lines[:3]) and len(lines) == 4
    assert lines[-1].startswith("needles: done, 4 trials in 0:00:0")
    with Count(4, "needles", "trial", bar=False, every=3600.0) as count:
        count.update(4)
    assert capsys.readouterr().out == ""  # short work says nothing


def test_a_bar_on_a_terminal_writes_no_lines(capsys):
    with Count(3, "RoPE deviation", "pass", bar=True, every=0.0) as count:
        count.update(3)
    captured = capsys.readouterr()
    assert captured.out == "" and "RoPE deviation" in captured.err
