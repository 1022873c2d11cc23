"""Every verb's numeric and path flags checked before any work: one line naming the flag and the value,
exit status 2, no traceback (each case here was a traceback, a division by zero or minutes of work
before). A table through the real command line: in-process for all, and in a fresh process for a few."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from transformers import LlamaForCausalLM

from anchor_lightning.commands import main
from anchor_lightning.data.tokenizer import ByteTokenizer
from tests.conftest import SHARED_DATA, tiny_config

ROOT = Path(__file__).resolve().parents[1]
MICRO = str(ROOT / "tests" / "configs" / "micro.yaml")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config("llama", vocab_size=258, bos_token_id=256, eos_token_id=257)).save_pretrained(folder)
    ByteTokenizer().save_pretrained(folder)
    return str(folder)


def llama2_tokenizer(tmp: Path) -> str:
    """A 32,000-piece tokenizer, larger than the test model's 258-id embedding."""
    folder = tmp / "llama2"
    folder.mkdir(exist_ok=True)
    (folder / "tokenizer.model").write_bytes((SHARED_DATA / "llama2-tokenizer.model").read_bytes())
    return str(folder)


def cases(model: str, tmp: Path) -> list[tuple[list[str], str]]:
    fit = ["fit", "--config", MICRO, f"--data.cache_dir={tmp / 'cache'}", f"--trainer.logger.init_args.save_dir={tmp}"]
    (tmp / "empty.yaml").write_text("")
    (tmp / "list.yaml").write_text("- model\n- data\n")
    only_config = tmp / "only-config"
    only_config.mkdir(exist_ok=True)
    (only_config / "config.json").write_text((Path(model) / "config.json").read_text())
    return [
        (["inspect", "--config", MICRO, "--width", "0"], "argument --width: 0 is below 1"),
        (["inspect", "--config", MICRO, "--row", "-1"], "argument --row: -1 is below 0"),
        (["inspect", "--config", MICRO, "--model.layout=diagonal"], "diagonal is not one of per_doc, shared, null"),
        (
            ["inspect", "--config", MICRO, "--out", "x"],
            "unrecognized arguments: --out x (see anchor-lightning inspect --help for its own options, fit --help",
        ),
        (["prepare", "--config", MICRO, "--bogus=1"], "(see anchor-lightning prepare --help for its own options"),
        (["evaluate", "--model", model, "--candidates", "0"], "argument --candidates: 0 is below 2"),
        (["evaluate", "--model", model, "--trials", "0"], "argument --trials: 0 is below 1"),
        (["evaluate", "--model", model, "--depths", "1.5"], "argument --depths: 1.5 is above 1.0"),
        (["evaluate", "--model", model, "--lengths", "0"], "argument --lengths: 0 is below 16"),
        (
            ["evaluate", "--model", model, "--batch_tokens", "-4"],
            "argument --batch_tokens/--batch-tokens: -4 is below 1",
        ),
        (["evaluate", "--model", model, "--first_token", "-1"], "argument --first_token/--first-token: -1 is below 0"),
        (["evaluate", "--model", model, "--rope_theta", "0"], "argument --rope_theta/--rope-theta: 0 is below"),
        (["evaluate", "--model", model, "--trials", "many"], "argument --trials: 'many' is not an integer"),
        (["evaluate", "--model", str(only_config)], "cannot load the checkpoint"),
        (["evaluate", "--suite", "ruler", "--model", model, "--workers", "0"], "argument --workers: 0 is below 1"),
        (["diagnose", "--model", model, "--lengths", "0"], "argument --lengths: 0 is below 2"),
        (["diagnose", "--model", model, "--sequences", "0"], "argument --sequences: 0 is below 1"),
        (["diagnose", "--model", model, "--offsets", "-3"], "argument --offsets: -3 is below 0"),
        (["diagnose", "--model", str(SHARED_DATA / "wikitext2-valid.jsonl")], "not a model"),
        ([*fit, "--data.micro_batch_size=0"], "field 'data.micro_batch_size': 0 is below 1"),
        ([*fit, "--data.global_batch_size=-2"], "field 'data.global_batch_size': -2 is below 1"),
        ([*fit, "--data.num_workers=-1"], "field 'data.num_workers': -1 is below 0"),
        ([*fit, f"--ckpt_path={tmp}"], "a directory, not a checkpoint"),
        ([*fit, "--model.rope_theta=0"], "field 'model.rope_theta': the RoPE base must be positive, got 0.0"),
        ([*fit, "--model.warmup_steps=-1"], "field 'model.warmup_steps': -1 is below 0"),
        ([*fit, "--model.min_lr_ratio=2"], "field 'model.min_lr_ratio': must be in [0, 1]"),
        ([*fit, "--model.loss_chunk_size=0"], "field 'model.loss_chunk_size': 0 is below 1"),
        ([*fit, "--trainer.accumulate_grad_batches=0"], "field 'trainer.accumulate_grad_batches': 0 is below 1"),
        ([*fit, "--model.float8=tensorwise"], "field 'model.float8': float8 needs a CUDA GPU with FP8 matmuls"),
        ([*fit, "--model.float8=blockwise"], "blockwise is not one of tensorwise, rowwise, null"),
        ([*fit, "--model.backend=flex"], "field 'model.backend': the flex backend trains only on CUDA"),
        ([*fit, "--trainer.devices=0"], "field 'trainer': `Trainer(devices='0')` value is not a valid input"),
        *(
            [
                (
                    [*fit, "--trainer.accelerator=gpu"],
                    "field 'trainer.accelerator': 'gpu' asks for a GPU and this machine",
                )
            ]
            if not (CUDAAccelerator.is_available() or MPSAccelerator.is_available())
            else []
        ),
        (["fit", "--config", str(tmp / "empty.yaml")], "empty.yaml: field '--config': empty, not a recipe"),
        (["fit", "--config", str(tmp / "list.yaml")], "list.yaml: field '--config': a YAML list, not a recipe"),
        (["evaluate", "--model", model, "--tokenizer", llama2_tokenizer(tmp)], "larger than the model's embedding"),
    ]


def test_every_bad_flag_is_one_line_before_any_work(capsys, tmp_path, model):
    for argv, message in cases(model, tmp_path):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert stop.value.code == 2 and len(lines) == 1 and "Traceback" not in err, (argv, err)
        assert message in lines[0], (argv, lines[0])


@pytest.mark.slow
def test_bad_flags_in_a_fresh_process(tmp_path, model):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # a parse error, and one found after the model loads (diagnose --model on a corpus file)
    table = cases(model, tmp_path)
    for argv, message in [table[0], next(c for c in table if c[1] == "not a model")]:
        done = subprocess.run(
            [sys.executable, "-m", "anchor_lightning", *argv], capture_output=True, text=True, env=env
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and lines[-1].startswith("error:") and message in lines[-1], (argv, done.stderr)
        assert "Traceback" not in done.stderr
        assert "torchao" not in done.stderr and "_pytree" not in done.stderr  # no import-time notes (quiet_imports)


def test_malformed_json_names_line_and_column(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "a\tb", "x": }\n')
    with pytest.raises(SystemExit):
        main(["fit", "--config", MICRO, f"--data.cache_dir={tmp_path / 'c'}", f"--data.train={bad}",
              f"--trainer.logger.init_args.save_dir={tmp_path}"])  # fmt: skip
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")][0]
    assert f"{bad}:2: malformed JSON (Invalid control character at, column 12)" in line, line


def test_a_tokenizer_load_error_is_whole_on_one_line(capsys, tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer_config.json").write_text('{"tokenizer_class": "NoSuchTokenizer"}')
    with pytest.raises(SystemExit):
        main(["fit", "--config", MICRO, f"--data.cache_dir={tmp_path / 'c'}", f"--data.tokenizer={tmp_path / 'tok'}",
              f"--trainer.logger.init_args.save_dir={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "cannot load a tokenizer" in err[0], err
    assert not err[0].rstrip().endswith((":", ",", "(")), err[0]
