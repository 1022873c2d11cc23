"""The loss is normalised by the global count of real targets of the whole optimizer step, so one
step's update does not depend on how its rows are split into micro-batches."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from anchor_lightning.data.datamodule import Collator, PackedDataModule
from anchor_lightning.data.sampler import StepBatchSampler
from anchor_lightning.model.module import AnchorLM
from anchor_lightning.model.schedule import parameter_groups, warmup_cosine

CONFIG = dict(
    model_type="llama",
    vocab_size=258,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


@pytest.fixture
def corpus(tmp_path):
    """Short documents of uneven length: rows hold different numbers of targets."""
    import json
    import random

    rng = random.Random(0)
    path = tmp_path / "docs.jsonl"
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    path.write_text(
        "".join(json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(1, 12)))}) + "\n" for _ in range(300))
    )
    return str(path)


def sgd(params):
    return torch.optim.SGD(params, lr=1.0)


def one_step_update(tmp_path, corpus, micro: int, accumulation: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = AnchorLM(config=CONFIG, seq_len=128, optimizer=sgd, loss="chunked")
    data = PackedDataModule(corpus, seq_len=128, micro_batch_size=micro, val_fraction=0.0, cache_dir=str(tmp_path))
    trainer = L.Trainer(
        accelerator="cpu",
        precision="64-true",
        max_steps=1,
        accumulate_grad_batches=accumulation,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    module.configure_model()
    before = {k: v.detach().double().clone() for k, v in module.model.state_dict().items()}
    trainer.fit(module, data)
    return {k: v.detach() - before[k] for k, v in module.model.state_dict().items()}


def reference_update(tmp_path, corpus) -> dict[str, torch.Tensor]:
    """By hand: sum of per-target losses over the step's 4 rows / their target count, one SGD step."""
    torch.manual_seed(0)
    module = AnchorLM(config=CONFIG, seq_len=128, loss="chunked")
    module.configure_model()
    module.model.double()
    data = PackedDataModule(corpus, seq_len=128, micro_batch_size=4, val_fraction=0.0, cache_dir=str(tmp_path))
    data.setup("fit")
    sampler = StepBatchSampler(data.train_rows.targets, data.train_rows.tokens, micro_batch_size=4)
    refs = next(iter(sampler))
    counts = [int(data.train_rows.targets[r.index]) for r in refs]
    assert len(set(counts)) > 1, "rows must hold different numbers of targets for the test to have power"
    batch = Collator("anchor", "shared")([(r, data.train_rows.row(r.index)) for r in refs])
    before = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    losses = module.token_losses(batch)
    (losses.sum() / batch["num_targets"]).backward()
    with torch.no_grad():
        for p in module.model.parameters():
            p -= p.grad
    return {k: v.detach() - before[k] for k, v in module.model.state_dict().items()}


def test_update_is_independent_of_the_micro_batch_split(tmp_path, corpus):
    whole = one_step_update(tmp_path, corpus, micro=4, accumulation=1)
    halves = one_step_update(tmp_path, corpus, micro=2, accumulation=2)
    singles = one_step_update(tmp_path, corpus, micro=1, accumulation=4)
    reference = reference_update(tmp_path, corpus)
    for name, delta in reference.items():
        assert delta.abs().max() > 0, name
        torch.testing.assert_close(whole[name], delta, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(halves[name], delta, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(singles[name], delta, rtol=1e-9, atol=1e-12)


def test_no_weight_decay_on_norms_biases_and_embeddings():
    module = AnchorLM(config=dict(CONFIG, model_type="qwen2"), seq_len=128)
    module.configure_model()
    decay, no_decay = parameter_groups(module.model)
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert no_decay["weight_decay"] == 0.0
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert "model.embed_tokens.weight" in undecayed
    assert any(n.endswith("norm.weight") for n in undecayed) and any(n.endswith("q_proj.bias") for n in undecayed)
    assert all(p.ndim == 2 for p in decay["params"])
    assert {names[id(p)] for p in decay["params"]} >= {"model.layers.0.self_attn.q_proj.weight", "lm_head.weight"}


@pytest.mark.parametrize("warmup,total", [(0, 10), (3, 10), (5, 6)])
def test_warmup_then_cosine_steps_per_optimizer_step(warmup, total):
    values = [warmup_cosine(s, warmup, total, 0.1) for s in range(total + 2)]
    if warmup:
        assert values[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert values[warmup] == pytest.approx(1.0)
    assert values[total] == pytest.approx(0.1) and values[total + 1] == pytest.approx(0.1)
    tail = values[warmup : total + 1]
    assert all(a >= b for a, b in zip(tail, tail[1:]))


def test_the_varlen_kernel_is_chosen_before_training(monkeypatch):
    from anchor_lightning.errors import UserError
    from anchor_lightning.model.speed import _varlen_kernel

    monkeypatch.setenv("ANCHOR_VARLEN_KERNEL", "torch")
    assert _varlen_kernel("varlen", "anchor", "cuda") == "torch"
    assert _varlen_kernel("varlen", "anchor", "cpu") is None  # the CPU reference loop runs no kernel
    monkeypatch.setenv("ANCHOR_VARLEN_KERNEL", "fa5")
    with pytest.raises(UserError, match="unknown varlen kernel 'fa5'"):
        _varlen_kernel("varlen", "anchor", "cuda")
    assert _varlen_kernel("varlen", "full", "cuda") is None  # full mode calls SDPA's causal kernel
