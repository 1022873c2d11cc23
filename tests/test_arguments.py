"""What the verbs' options share (commands/arguments.py): the lengths a verb evaluates."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from anchor_lightning.commands.arguments import lengths_to_run
from anchor_lightning.commands.diagnose import default_lengths
from anchor_lightning.commands.evaluate import ruler_lengths
from anchor_lightning.errors import RunWarning


def test_the_lengths_asked_for_or_the_verbs_default_for_the_trained_length():
    config = SimpleNamespace(max_position_embeddings=8192)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the trained length: no warning
        assert lengths_to_run(config, [1024, 2048], "cpu", default_lengths) == [1024, 2048]
        assert lengths_to_run(config, None, "cuda", ruler_lengths) == [4096, 8192]
        assert lengths_to_run(config, None, "cuda", default_lengths) == [64, 256, 1024, 4096]
        assert lengths_to_run(SimpleNamespace(), [512], "cpu", default_lengths) == [512]  # no trained length known


def test_lengths_past_the_trained_length_are_run_with_a_warning():
    config = SimpleNamespace(max_position_embeddings=8192)
    with pytest.warns(RunWarning, match=r"lengths up to 32768 exceed the model's max_position_embeddings \(8192\)"):
        assert lengths_to_run(config, [16384, 32768], "cuda", ruler_lengths) == [16384, 32768]


class _Stream:
    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bars_on_a_terminal_and_plain_lines_in_a_log_file(monkeypatch, terminal):
    """evaluate and diagnose draw bars where standard error is a terminal and print plain lines where it
    is a file (as fit does); the Hugging Face loading bars are off in a log file unless the user's
    environment says otherwise."""
    import os
    import sys

    from anchor_lightning.commands import diagnose as diagnose_command
    from anchor_lightning.commands import evaluate, quiet_imports

    monkeypatch.setattr(sys, "stderr", _Stream(terminal))
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    for verb in (evaluate, diagnose_command):
        assert verb.parser().parse_args(["--model", "m"]).no_progress is not terminal
        assert verb.parser().parse_args(["--model", "m", "--no_progress"]).no_progress is True
    quiet_imports()
    assert os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == (None if terminal else "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # the user's own choice stays
    quiet_imports()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"


def test_a_runs_own_warning_is_one_line_and_any_other_keeps_its_source(monkeypatch):
    """Installed over Lightning's format (set when Lightning is imported), once however often it runs."""
    import lightning.fabric.utilities.warnings  # noqa: F401

    from anchor_lightning.commands import one_line_warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    one_line_warnings()
    installed = warnings.formatwarning
    one_line_warnings()
    assert warnings.formatwarning is installed  # not wrapped twice
    ours = str(Path(__file__).resolve().parents[1] / "anchor_lightning" / "model" / "build.py")
    assert installed(RunWarning("rows exceed"), RunWarning, ours, 3) == "warning: rows exceed\n"
    other = installed(UserWarning("deprecated"), UserWarning, "/x/lib.py", 7, "call()")
    assert other.startswith("/x/lib.py:7: UserWarning: deprecated") and "call()" in other
