"""Every recipe parses against the real CLI and instantiates (model on the meta device) with the
values it promises. A new recipe must be added to EXPECTED."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from anchor_lightning.commands import main
from anchor_lightning.model.schedule import parameter_groups
from tests.conftest import SMOLLM2_GGUF

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

DEBUG = {
    "debug/tiny-cpu.yaml": dict(
        rope_theta=1e4,
        seq_len=512,
        global_batch=8,
        lr=3e-3,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        mode="anchor",
        backend="sdpa",
        layout="shared",
        precision="32-true",
        max_steps=80,
        model_type="llama",
    ),
    "debug/tiny-gpu.yaml": dict(
        rope_theta=5e5,
        seq_len=8192,
        global_batch=2,
        lr=1e-3,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        mode="anchor",
        backend="varlen",
        layout="per_doc",
        precision="bf16-mixed",
        max_steps=60,
        model_type="llama",
    ),
}


def paper(model_type: str, context: str, mode: str) -> dict:
    """The paper's setting (docs/design.md, "The paper's setting"): RoPE base 5M at 64K and 10M at 128K, AdamW lr 2e-5,
    betas (0.9, 0.95), weight decay 0.1, 2000 steps of 8 rows, bf16 compute over fp32 master weights."""
    return dict(
        rope_theta=5e6 if context == "64k" else 1e7,
        seq_len=65536 if context == "64k" else 131072,
        global_batch=8,
        lr=2e-5,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        mode=mode,
        backend="varlen",
        layout="per_doc",
        precision="bf16-mixed",
        max_steps=2000,
        model_type=model_type,
    )


PAPER = {
    **{
        f"llama2-7b/{c}-{m}.yaml": paper("llama", c, m)
        for c in ("64k", "128k")
        for m in ("anchor", "full", "intra_doc", "intra_doc_reset")
    },
    "llama3-8b/64k-anchor.yaml": paper("llama", "64k", "anchor"),
    "mistral-7b-v0.3/64k-anchor.yaml": paper("mistral", "64k", "anchor"),
    "qwen1.5-1.8b/64k-anchor.yaml": dict(paper("qwen2", "64k", "anchor"), anchor_id=151643),
    "llama-1b/64k-anchor.yaml": paper("llama", "64k", "anchor"),
    "llama-1b/64k-full.yaml": paper("llama", "64k", "full"),
}
SMOLLM2 = {
    f"smollm2-135m/32k-{m}.yaml": dict(
        rope_theta=2236068.0,
        seq_len=32768,
        global_batch=4,
        lr=1e-4,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        mode=m,
        backend="varlen",
        layout="per_doc",
        precision="bf16-mixed",
        max_steps=100,
        model_type="llama",
        anchor_id=0,
    )
    for m in ("anchor", "full", "intra_doc", "intra_doc_reset")
}
# the short-document mix: one recipe per length, the mode an override; the RoPE base by the same rule
SMOLLM2.update(
    {
        f"smollm2-135m/{n}-mix.yaml": dict(SMOLLM2["smollm2-135m/32k-anchor.yaml"], rope_theta=theta, seq_len=seq_len)
        for n, theta, seq_len in (("32k", 2236068.0, 32768), ("64k", 10573713.0, 65536))
    }
)
EXPECTED = {**DEBUG, **PAPER, **SMOLLM2}
# parameter counts of the architectures (from their published configs), to catch a wrong shape
PARAMETERS = {
    "llama2-7b": 6.74e9,
    "llama3-8b": 8.03e9,
    "mistral-7b-v0.3": 7.25e9,
    "qwen1.5-1.8b": 1.84e9,
    "llama-1b": 1.104e9,
}


def all_recipes() -> list[str]:
    return sorted(str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml"))


def test_every_recipe_is_listed():
    assert all_recipes() == sorted(EXPECTED)


@pytest.mark.parametrize(
    "name",
    # the SmolLM2 recipes load the real 135M model (the first converts the GGUF): the slow tier
    [pytest.param(name, marks=pytest.mark.slow) if name in SMOLLM2 else name for name in all_recipes()],
)
def test_recipe_instantiates_with_its_values(name, tmp_path):
    expected = EXPECTED[name]
    path = RECIPES / name
    text = path.read_text()
    assert text.startswith("# "), "a recipe opens with its comment block"
    assert f"python -m anchor_lightning fit --config recipes/{name}" in text, "the header gives the exact command"
    assert "# Override:" in text or "# Override" in text
    raw = yaml.safe_load(text)
    assert raw["trainer"]["precision"] == expected["precision"]
    # the trainer is built on one CPU device here (GPU recipes run on GPU machines)
    given = []
    if name in SMOLLM2:  # a pretrained-only recipe: the real GGUF checkpoint
        if not SMOLLM2_GGUF.is_file():
            pytest.skip(f"needs {SMOLLM2_GGUF}")
        given = [f"--model.pretrained={SMOLLM2_GGUF}"]
    cli = main(
        [
            "--config",
            str(path),
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            f"--data.cache_dir={tmp_path}",
            *given,
        ],
        run=False,
    )
    module, data, trainer = cli.model, cli.datamodule, cli.trainer
    if name in SMOLLM2:  # real weights (from_pretrained refuses the meta device); 135M parameters load in seconds
        module.configure_model()
    else:
        with torch.device("meta"):
            module.configure_model()
        assert next(module.model.parameters()).is_meta
    config = module.model.config
    assert config.model_type == expected["model_type"]
    assert config.rope_parameters["rope_theta"] == expected["rope_theta"]
    assert module.seq_len == data.seq_len == expected["seq_len"]
    assert data.micro_batch_size * trainer.accumulate_grad_batches * trainer.world_size == expected["global_batch"]
    assert (module.mode, module.backend, module.layout) == (expected["mode"], expected["backend"], expected["layout"])
    assert (data.mode, data.layout) == (expected["mode"], expected["layout"])
    assert trainer.max_steps == expected["max_steps"]
    assert data.settings.anchor_id == expected.get("anchor_id")
    optimizer = module.optimizer_factory(parameter_groups(module.net))
    group = optimizer.param_groups[0]
    assert group["lr"] == expected["lr"] and tuple(group["betas"]) == expected["betas"]
    assert group["weight_decay"] == expected["weight_decay"] and optimizer.param_groups[1]["weight_decay"] == 0.0
    family = name.split("/")[0]
    if family in PARAMETERS:
        assert sum(p.numel() for p in module.net.parameters()) == pytest.approx(PARAMETERS[family], rel=0.01)
        assert trainer.gradient_clip_val == 1.0 and module.speed.activation_checkpointing
        assert module.speed.checkpoint_layers is None and module.speed.kernels == "auto"
    if name in SMOLLM2:
        assert sum(p.numel() for p in module.net.parameters()) == 134_515_008
        assert data.settings.eos_id == 0 and trainer.gradient_clip_val == 1.0
    if name.endswith("-mix.yaml"):  # RULER over the last 50 steps: 5 evaluations, every 10 steps from step 60
        ruler = next(c for c in trainer.callbacks if type(c).__name__ == "RulerEval")
        assert (ruler.every, ruler.first_step, ruler.last_k) == (10, 60, 5)
        assert ruler.settings.lengths == [expected["seq_len"]]
        assert expected["rope_theta"] == round(100_000 * 500 ** math.log(expected["seq_len"] / 8192, 16))


FRAGMENTS = {
    "strategy/fsdp.yaml": lambda t: type(t.strategy).__name__ == "ShardedStrategy" and not t.strategy.cpu_offload,
    "strategy/fsdp-offload.yaml": lambda t: type(t.strategy).__name__ == "ShardedStrategy" and t.strategy.cpu_offload,
    "strategy/fsdp-sequence-parallel.yaml": lambda t: (
        type(t.strategy).__name__ == "ShardedStrategy" and t.strategy.sequence_parallel_size == 2
    ),
    "strategy/ddp.yaml": lambda t: type(t.strategy).__name__ == "DDPStrategy",
    "trainer/gpu-bf16.yaml": lambda t: t.precision == "bf16-mixed",
}


def test_every_fragment_is_listed():
    assert sorted(
        str(p.relative_to(RECIPES.parent / "conf")) for p in (RECIPES.parent / "conf").rglob("*.yaml")
    ) == sorted(FRAGMENTS)


@pytest.mark.parametrize("fragment", sorted(FRAGMENTS))
def test_conf_fragments_layer_over_a_recipe(fragment, tmp_path):
    path = RECIPES.parent / "conf" / fragment
    assert path.read_text().startswith("# "), "a fragment opens with a comment saying what it is for"
    cli = main(
        [
            "--config",
            str(RECIPES / "debug/tiny-cpu.yaml"),
            "--config",
            str(path),
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            f"--data.cache_dir={tmp_path}",
        ],
        run=False,
    )
    assert FRAGMENTS[fragment](cli.trainer)
