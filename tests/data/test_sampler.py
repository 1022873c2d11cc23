"""Which rows each rank reads per optimizer step, the step's global normaliser, and resuming."""

from __future__ import annotations

import numpy as np
import pytest

from anchor_lightning.data.sampler import EvalBatchSampler, StepBatchSampler


def samplers(world, **kw):
    targets = np.arange(10, 47)  # 37 rows with distinct target counts
    tokens = targets + 1
    return [StepBatchSampler(targets, tokens, rank=r, world_size=world, **kw) for r in range(world)]


@pytest.mark.parametrize("world,micro,accum", [(1, 1, 1), (1, 3, 2), (2, 2, 3), (4, 1, 2)])
def test_steps_cover_disjoint_rows_and_carry_the_global_count(world, micro, accum):
    ranks = samplers(world, micro_batch_size=micro, accumulation=accum, seed=5)
    per_rank = [list(s) for s in ranks]
    steps = ranks[0].steps_per_epoch
    assert steps == 37 // (world * micro * accum)
    assert all(len(batches) == steps * accum for batches in per_rank)
    seen = [ref.index for batches in per_rank for batch in batches for ref in batch]
    assert len(seen) == len(set(seen)) == steps * world * micro * accum
    targets = np.arange(10, 47)
    for step in range(steps):
        rows = [ref for batches in per_rank for batch in batches[step * accum : (step + 1) * accum] for ref in batch]
        assert {ref.step_targets for ref in rows} == {int(targets[[r.index for r in rows]].sum())}
        assert {ref.step_tokens for ref in rows} == {int(targets[[r.index for r in rows]].sum()) + len(rows)}


def test_epochs_reshuffle_and_seed_decides_order():
    a, b = samplers(1, micro_batch_size=4, seed=1)[0], samplers(1, micro_batch_size=4, seed=1)[0]
    first, again = [r.index for batch in a for r in batch], [r.index for batch in b for r in batch]
    assert first == again
    second = [r.index for batch in a for r in batch]  # the iterator moved a to epoch 1
    assert a.epoch == 2 and second != first, "a new epoch reshuffles"
    assert len(second) == len(first) and len(set(second)) == len(second), "each epoch reads rows once"
    other = [r.index for batch in samplers(1, micro_batch_size=4, seed=2)[0] for r in batch]
    assert other != first, "another seed, another order"


def test_resume_continues_with_the_next_micro_batch():
    full = samplers(1, micro_batch_size=2, accumulation=2, seed=3)[0]
    expected = [[r.index for r in batch] for batch in full]
    interrupted = samplers(1, micro_batch_size=2, accumulation=2, seed=3)[0]
    it = iter(interrupted)
    head = [[r.index for r in next(it)] for _ in range(5)]
    resumed = samplers(1, micro_batch_size=2, accumulation=2, seed=3)[0]  # the seed is checked on resume
    resumed.resume_at(interrupted.epoch, 5)  # what the data module does from the trainer's restored step
    tail = [[r.index for r in batch] for batch in resumed]
    assert head + tail == expected


def test_too_few_rows_for_one_step_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than one optimizer step needs"):
        StepBatchSampler(np.ones(3), np.ones(3), micro_batch_size=2, accumulation=2)


def test_eval_sampler_reads_every_row_once_over_ranks():
    rows = sorted(ref.index for r in range(3) for batch in EvalBatchSampler(11, 2, 3, r) for ref in batch)
    assert rows == list(range(11))
