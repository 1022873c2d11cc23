"""model/step_stats.py: the micro-batches of a step, the running totals, the last-micro-batch rule."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from anchor_lightning.model.step_stats import StepStats, ends_step


def micro_batch(rows, tokens):
    return {"rows": rows, "num_docs": len(rows) * 2, "num_tokens": tokens, "attention_pairs": tokens * 3}


def test_ends_step_is_the_last_micro_batch_of_each_optimizer_step():
    trainer = SimpleNamespace(accumulate_grad_batches=3)
    assert [ends_step(trainer, i) for i in range(7)] == [False, False, True, False, False, True, False]
    assert all(ends_step(SimpleNamespace(accumulate_grad_batches=1), i) for i in range(3))


def test_a_step_accumulates_its_micro_batches_then_counts_into_the_totals():
    stats = StepStats()
    stats.current.add(torch.tensor(1.5), micro_batch([4, 5], 100))
    stats.current.add(torch.tensor(0.5), micro_batch([6], 60))
    stats.finish(step=0, step_tokens=320, flops=1e9)  # all ranks' tokens; this rank's FLOPs
    assert (stats.tokens_seen, stats.flops_seen) == (320, 1e9)
    assert stats.last.rows == [4, 5, 6] and float(stats.last.loss) == 2.0 and stats.last.tokens == 160
    assert stats.last.docs == 6 and stats.last.attention_pairs == 480
    assert stats.current.rows == [] and stats.current.loss is None
    stats.current.add(torch.tensor(1.0), micro_batch([7], 10))
    stats.finish(step=1, step_tokens=20, flops=1e8)
    assert stats.rows == {0: [4, 5, 6], 1: [7]}  # kept until a logging step names them
    stats.logged(1)
    assert stats.rows == {1: [7]}


def test_the_counters_survive_a_checkpoint():
    stats = StepStats(tokens_seen=12, flops_seen=3.5, skipped_steps=2)
    again = StepStats()
    again.restore(stats.counters())
    assert again.counters() == {"tokens_seen": 12, "flops_seen": 3.5, "skipped_steps": 2}
    fresh = StepStats()
    fresh.restore({})  # a checkpoint written before the counters were kept
    assert fresh.counters() == {"tokens_seen": 0, "flops_seen": 0.0, "skipped_steps": 0}
