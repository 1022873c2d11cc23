"""Messages a run prints for its user (once, on rank zero), on standard output. Lightning's own
informational log lines are silenced by the command line (commands/train.py), so what the run says
is what matters: its banner, the kernel it chose, a signal received."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_only


@rank_zero_only
def say(text: str) -> None:
    print(text, flush=True)
