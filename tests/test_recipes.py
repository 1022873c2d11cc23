"""Every recipe parses against the real CLI and instantiates (model on the meta device) with the
values it promises. A new recipe must be added to EXPECTED."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from anchor_lightning.cli import main
from anchor_lightning.model.schedule import parameter_groups

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

EXPECTED = {
    "debug/tiny-cpu.yaml": dict(
        rope_theta=1e4, seq_len=512, micro_batch=4, accumulation=2, lr=3e-3, betas=(0.9, 0.95), mode="anchor",
        backend="sdpa", layout="shared", precision="32-true",
    ),
    "debug/tiny-gpu.yaml": dict(
        rope_theta=5e5, seq_len=8192, micro_batch=2, accumulation=1, lr=1e-3, betas=(0.9, 0.95), mode="anchor",
        backend="varlen", layout="per_doc", precision="bf16-mixed",
    ),
}


def all_recipes() -> list[str]:
    return sorted(str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml"))


def test_every_recipe_is_listed():
    assert all_recipes() == sorted(EXPECTED)


@pytest.mark.parametrize("name", all_recipes())
def test_recipe_instantiates_with_its_values(name, tmp_path):
    expected = EXPECTED[name]
    path = RECIPES / name
    text = path.read_text()
    assert text.startswith("# "), "a recipe opens with its comment block"
    assert f"python -m anchor_lightning fit --config recipes/{name}" in text, "the header gives the exact command"
    raw = yaml.safe_load(text)
    assert raw["trainer"]["precision"] == expected["precision"]
    # the trainer is built on CPU here (GPU recipes are run on the GPU machine)
    cli = main(["--config", str(path), "--trainer.accelerator=cpu", f"--data.cache_dir={tmp_path}"], run=False)
    module, data, trainer = cli.model, cli.datamodule, cli.trainer
    with torch.device("meta"):
        module.configure_model()
    assert next(module.model.parameters()).is_meta
    assert module.model.config.rope_parameters["rope_theta"] == expected["rope_theta"]
    assert module.seq_len == data.seq_len == expected["seq_len"]
    assert data.micro_batch_size == expected["micro_batch"]
    assert trainer.accumulate_grad_batches == expected["accumulation"]
    assert (module.mode, module.backend, module.layout) == (expected["mode"], expected["backend"], expected["layout"])
    assert (data.mode, data.layout) == (expected["mode"], expected["layout"])
    optimizer = module.optimizer_factory(parameter_groups(module.model))
    group = optimizer.param_groups[0]
    assert group["lr"] == expected["lr"] and tuple(group["betas"]) == expected["betas"]
    assert optimizer.param_groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize("fragment", sorted(str(p) for p in (RECIPES.parent / "conf").rglob("*.yaml")))
def test_conf_fragments_layer_over_a_recipe(fragment, tmp_path):
    text = Path(fragment).read_text()
    assert text.startswith("# "), "a fragment opens with a comment saying what it is for"
    raw = yaml.safe_load(text)
    cli = main(["--config", str(RECIPES / "debug/tiny-cpu.yaml"), "--config", fragment, "--trainer.accelerator=cpu",
                f"--data.cache_dir={tmp_path}"], run=False)
    for key, value in raw.get("trainer", {}).items():
        if key not in ("accelerator", "devices"):
            assert str(getattr(cli.trainer, key, None) or cli.config["trainer"][key]) == str(value), key
