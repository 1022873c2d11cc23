"""Messages a run prints for its user (once, on rank zero), on standard output. Lightning's own
informational log lines are silenced by the command line (commands/train.py), so what the run says
is what matters: its banner, the kernel it chose, a signal received."""

from __future__ import annotations

import time
from collections.abc import Callable

from lightning.pytorch.utilities import rank_zero_only


@rank_zero_only
def say(text: str) -> None:
    print(text, flush=True)


def number(value: float) -> str:
    """A setting's value as a user reads it: 2,236,068 and 10,000, not 2.23607e+06; 0.5 as 0.5."""
    value = float(value)
    return f"{value:,.0f}" if value.is_integer() else f"{value:,}"


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Plain progress lines for long preparations (the same on a terminal and in a log file): every
    ``every`` seconds the documents and tokens so far, tokens/s and, where the share of the input read
    is known (``position()`` -> (bytes read, total bytes)), the percentage and the time left; a closing
    line when the work took longer than one interval. Short work prints nothing."""

    def __init__(self, what: str, position: Callable[[], tuple[int, int]] | None = None, every: float = 10.0) -> None:
        self.what, self.position, self.every = what, position, every
        self.start = self.last = time.perf_counter()

    def update(self, documents: int, tokens: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        line = f"{self.what}: {documents:,} documents, {tokens:,} tokens, {tokens / elapsed:,.0f} tokens/s"
        if self.position is not None:
            done, total = self.position()
            if total and done:
                line += f", {done / total:.0%} read, {_clock(elapsed * (total - done) / done)} left"
        say(line + f" (elapsed {_clock(elapsed)})")

    def close(self, documents: int, tokens: int) -> None:
        elapsed = time.perf_counter() - self.start
        if elapsed >= self.every:
            say(
                f"{self.what}: done, {documents:,} documents, {tokens:,} tokens in {_clock(elapsed)} "
                f"({tokens / elapsed:,.0f} tokens/s)"
            )


class Count:
    """Progress through ``total`` units of work (needle trials, diagnostic passes): with ``bar``, tqdm's
    bar (a terminal); without, plain lines for a log file, every ``every`` seconds the count, the rate
    and the time left, and a closing line when the work took longer than one interval. Used as a
    context manager or closed by hand."""

    def __init__(self, total: int, what: str, unit: str, bar: bool, every: float = 30.0) -> None:
        self.total, self.what, self.unit, self.every, self.done = total, what, unit, every, 0
        self.start = self.last = time.perf_counter()
        self.bar = None
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit)

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.perf_counter()
        if now - self.last < self.every or self.done >= self.total:
            return
        self.last, elapsed = now, now - self.start
        left = elapsed * (self.total - self.done) / self.done
        say(
            f"{self.what}: {self.done:,} of {self.total:,} {self.unit}s, {self.done / elapsed:,.2f}/s, "
            f"{_clock(left)} left (elapsed {_clock(elapsed)})"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            return
        elapsed = time.perf_counter() - self.start
        if elapsed >= self.every:
            say(f"{self.what}: done, {self.done:,} {self.unit}s in {_clock(elapsed)}")

    def __enter__(self) -> Count:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
