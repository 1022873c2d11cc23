"""Which rows each rank reads at each optimizer step, and the step's global normaliser.

Every rank draws the same permutation (seed + epoch), so every rank knows all rows of an optimizer
step: ``world_size * micro_batch_size * accumulation`` rows, laid out as::

    step s -> perm[s*S : (s+1)*S]; micro-batch m of rank r -> the block (m * world_size + r)

Each yielded row reference carries ``step_targets`` (labelled slots of the whole step on all ranks)
and ``step_tokens``: the loss is summed per micro-batch and divided by ``step_targets``, which is the
token-weighted mean over accumulation and ranks with no communication. An epoch ends at its last
whole step; the remaining rows (fewer than one step) wait for the next epoch's reshuffle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np


class RowRef(NamedTuple):
    index: int  # type: ignore[assignment]  # the row's index in the packed set (shadows tuple.index)
    step_targets: int
    step_tokens: int


class StepBatchSampler:
    """A batch sampler yielding lists of :class:`RowRef` (one list per micro-batch of this rank).

    Stateful: ``state_dict`` records the epoch and the micro-batches already yielded, so a resumed run
    continues with the next unseen micro-batch.
    """

    def __init__(
        self,
        targets: np.ndarray,
        tokens: np.ndarray,
        micro_batch_size: int,
        accumulation: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.targets, self.tokens = np.asarray(targets), np.asarray(tokens)
        self.micro_batch_size, self.accumulation = micro_batch_size, accumulation
        self.world_size, self.rank = world_size, rank
        self.seed, self.shuffle = seed, shuffle
        self.rows_per_step = world_size * micro_batch_size * accumulation
        if len(self.targets) < self.rows_per_step:
            raise ValueError(
                f"the data set packs into {len(self.targets)} rows, fewer than one optimizer step needs "
                f"({world_size} ranks x {micro_batch_size} rows x {accumulation} accumulation = {self.rows_per_step})"
            )
        self.epoch = 0
        self.consumed = 0  # micro-batches of this epoch already yielded (for resume)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.targets) // self.rows_per_step

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accumulation

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.targets))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.targets))

    def __iter__(self) -> Iterator[list[RowRef]]:
        perm = self.order()
        b, s = self.micro_batch_size, self.rows_per_step
        for micro in range(self.consumed, len(self)):
            step, m = divmod(micro, self.accumulation)
            step_rows = perm[step * s : (step + 1) * s]
            step_targets, step_tokens = int(self.targets[step_rows].sum()), int(self.tokens[step_rows].sum())
            block = (m * self.world_size + self.rank) * b
            self.consumed = micro + 1
            yield [RowRef(int(i), step_targets, step_tokens) for i in step_rows[block : block + b]]
        self.epoch, self.consumed = self.epoch + 1, 0

    def resume_at(self, epoch: int, micro_batches_done: int) -> None:
        """Continue with the next micro-batch after ``micro_batches_done`` of ``epoch`` (the order is a
        function of the seed and the epoch, so nothing else needs restoring)."""
        self.epoch, self.consumed = epoch, micro_batches_done


class EvalBatchSampler:
    """Validation: rank r reads rows r, r + W, ...; every row once, micro-batches of ``batch_size``."""

    def __init__(self, num_rows: int, batch_size: int, world_size: int = 1, rank: int = 0):
        self.rows = list(range(rank, num_rows, world_size))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self) -> Iterator[list[RowRef]]:
        for start in range(0, len(self.rows), self.batch_size):
            # step_targets 0: the validation loss is normalised over the whole set (see the module)
            yield [RowRef(i, 0, 0) for i in self.rows[start : start + self.batch_size]]
