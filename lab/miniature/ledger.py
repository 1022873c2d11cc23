"""The miniature's bookkeeping and time budget (lab/miniature/run.py runs the steps): which steps are
done (``WORK/state.json``, rewritten atomically after each), how long each kind of step took last
time, and whether the next one fits in what is left of this invocation's ``--deadline``. The clock is
given, so the scheduling is tested on a fake one."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

# first guesses of a step's seconds on one H200 (replaced by what the last run of the same kind took)
GUESS = {"eval": 240.0, "export": 40.0}
TRAIN_MIN_LEFT = 120.0  # do not start (or resume) training with less time left than this
STOP_MARGIN = 45.0  # SIGTERM this long before the deadline: the step in progress and the save finish in time


class Ledger:
    def __init__(self, work: Path, deadline: float, clock: Callable[[], float]) -> None:
        self.file = work / "state.json"
        self.state = json.loads(self.file.read_text()) if self.file.is_file() else {"done": {}, "kinds": {}}
        self.deadline, self.clock = deadline, clock
        self.started = clock()
        self.lock = threading.RLock()  # evaluations finish from their threads

    def done(self, step: str) -> bool:
        return step in self.state["done"]

    def left(self) -> float:
        return self.deadline - (self.clock() - self.started)

    def elapsed(self) -> str:
        return f"{self.clock() - self.started:6.0f}s"

    def guess(self, kind: str, default: float | None = None) -> float:
        """The seconds the last step of this kind took (else ``default``, else the first guess)."""
        return self.state["kinds"].get(kind, default if default is not None else GUESS[kind])

    def fits(self, kind: str, default: float | None = None) -> bool:
        return self.left() > self.guess(kind, default) * 1.1

    def save(self) -> None:
        with self.lock:
            tmp = self.file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state, indent=1))
            os.replace(tmp, self.file)

    def finish(self, step: str, kind: str, seconds: float, **extra) -> None:
        with self.lock:
            self.state["done"][step] = {"seconds": round(seconds, 1), **extra}
            self.state["kinds"][kind] = seconds
            self.save()

    def train_part(self, mode: str, part: dict) -> list[dict]:
        """Record one invocation's share of a mode's training; returns every part so far."""
        with self.lock:
            parts = self.state.setdefault("train_parts", {}).setdefault(mode, [])
            parts.append(part)
            self.save()
            return parts
