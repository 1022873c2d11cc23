"""FSDP2 (ShardedStrategy) on 2 CPU processes with gloo: the same per-step rows and losses as one
process with the same global batch; sharded checkpoints resume exactly; pretrained weights stream in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, LlamaConfig

pytestmark = pytest.mark.slow  # two gloo processes per test

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "tests" / "configs" / "micro.yaml"
STEPS = 6


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A random tiny Llama saved as a HF directory: both runs start from the same weights."""
    folder = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=258,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def run(
    tmp_path: Path,
    name: str,
    pretrained: Path,
    devices: int,
    accumulation: int,
    *extra: str,
    fsdp: bool = True,
    micro: int = 1,
) -> subprocess.CompletedProcess:
    fragment = {
        "trainer": {
            "devices": devices,
            "accumulate_grad_batches": accumulation,
            "enable_checkpointing": True,
            "limit_val_batches": 0,
            "val_check_interval": None,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(tmp_path / name / "ckpt"),
                        "every_n_train_steps": 3,
                        "save_last": True,
                        "save_top_k": -1,
                    },
                },
                {
                    "class_path": "anchor_lightning.callbacks.trace.StepTrace",
                    "init_args": {"directory": str(tmp_path / name)},
                },
            ],
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / name / "tb")},
            },
            "log_every_n_steps": 1,
        },
        "model": {"pretrained": str(pretrained), "activation_checkpointing": True},
        "data": {
            "tokenizer": "bytes",
            "micro_batch_size": micro,
            "cache_dir": str(tmp_path / "cache"),
            "val_fraction": 0.0,
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fragment))
    configs = ["--config", str(MICRO), "--config", str(path)]
    if fsdp:
        configs += ["--config", str(ROOT / "conf" / "strategy" / "fsdp.yaml")]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-m", "anchor_lightning", "fit", *configs, f"--trainer.max_steps={STEPS}", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def steps(tmp_path: Path, name: str, ranks: int) -> list[tuple[list[int], float]]:
    """Per optimizer step: the rows all ranks read (sorted) and the step's loss."""
    traces = [
        [json.loads(line) for line in (tmp_path / name / f"trace-rank{r}.jsonl").read_text().splitlines()]
        for r in range(ranks)
    ]
    out = []
    for records in zip(*traces):
        assert len({rec["step"] for rec in records}) == 1 and len({rec["loss"] for rec in records}) == 1
        out.append((sorted(r for rec in records for r in rec["rows"]), records[0]["loss"]))
    return out


def test_fsdp_matches_one_process_and_resumes(tmp_path, pretrained):
    run(tmp_path, "single", pretrained, devices=1, accumulation=2, fsdp=False)
    run(tmp_path, "fsdp", pretrained, devices=2, accumulation=1)
    single, sharded = steps(tmp_path, "single", 1), steps(tmp_path, "fsdp", 2)
    assert len(single) == len(sharded) == STEPS
    for (rows_a, loss_a), (rows_b, loss_b) in zip(single, sharded):
        assert rows_a == rows_b
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert (tmp_path / "fsdp" / "ckpt" / "last.ckpt").is_dir(), "FSDP checkpoints are sharded directories"
    # the logged train/loss is the global token-weighted mean, as in the single process
    from tests.test_cli import scalars

    logged = [v for _, v in scalars(tmp_path / "fsdp" / "tb")["train/loss"]]
    assert logged == pytest.approx([loss for _, loss in sharded], rel=1e-6)

    # resume the sharded run from its step-3 checkpoint: the same rows and losses again
    (tmp_path / "fsdp" / "trace-rank0.jsonl").unlink()
    (tmp_path / "fsdp" / "trace-rank1.jsonl").unlink()
    ckpt = tmp_path / "fsdp" / "ckpt" / "epoch=0-step=3.ckpt"
    run(tmp_path, "fsdp", pretrained, 2, 1, f"--ckpt_path={ckpt}")
    resumed = steps(tmp_path, "fsdp", 2)
    assert len(resumed) == STEPS - 3
    for (rows_a, loss_a), (rows_b, loss_b) in zip(sharded[3:], resumed):
        assert rows_a == rows_b and loss_b == pytest.approx(loss_a, rel=1e-5)


def test_sequence_parallel_training_matches_one_process(tmp_path, pretrained):
    """2 ranks sharing every row (Ulysses, varlen backend) against one process on the same rows."""
    sp = ["--trainer.strategy.init_args.sequence_parallel_size=2", "--model.backend=varlen"]
    run(tmp_path, "single", pretrained, 1, 1, "--model.backend=varlen", fsdp=False, micro=2)
    run(tmp_path, "sp", pretrained, 2, 1, *sp, micro=2)
    single, sharded = steps(tmp_path, "single", 1), steps(tmp_path, "sp", 2)
    assert len(single) == STEPS
    for (rows_a, loss_a), (rows_b, loss_b) in zip(single, sharded):
        assert sorted(set(rows_b)) == rows_a and len(rows_b) == 2 * len(rows_a)  # both ranks read each row
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
