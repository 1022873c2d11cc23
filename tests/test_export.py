"""A checkpoint exported to a Hugging Face directory loads in a fresh process without this package and
gives the trained module's logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anchor_lightning.commands import main
from tests.helpers import checkpoint_fragment, fresh_process_logits, module_logits

ROOT = Path(__file__).resolve().parents[1]


def fit_micro(tmp_path, *overrides: str) -> Path:
    """The micro recipe trained into tmp_path/ckpt; its last.ckpt."""
    main(
        [
            "fit",
            "--config",
            "tests/configs/micro.yaml",
            "--config",
            checkpoint_fragment(tmp_path, tmp_path / "ckpt"),
            f"--data.cache_dir={tmp_path / 'cache'}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            *overrides,
        ]
    )
    return tmp_path / "ckpt" / "last.ckpt"


@pytest.mark.slow
def test_export_loads_in_a_fresh_process_and_matches(tmp_path):
    fit_micro(tmp_path, "--trainer.max_steps=3")
    main(["export", "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt"), "--out", str(tmp_path / "hf")])
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    note = (tmp_path / "hf" / "ANCHOR.md").read_text()
    assert "position 0" in note and "does NOT add F" in note and "ids = [256] + tokenizer(" in note

    # the byte tokenizer travels as Hugging Face files with the run's special ids
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, len(tokenizer)) == (256, 257, 258)
    assert tokenizer("héllo", add_special_tokens=False)["input_ids"] == list("héllo".encode())
    assert tokenizer.decode([256, *b"ok", 257]) == "<s>ok</s>"
    config = AutoConfig.from_pretrained(tmp_path / "hf")
    assert (config.bos_token_id, config.eos_token_id) == (256, 257)

    # one document behind its first token: positions 0, 1, 2 ... in anchor mode, plain causal attention
    document = [256] + list(b"an exported document")
    expected = module_logits(str(tmp_path / "ckpt" / "last.ckpt"), document, "shared", 256, (256,))
    logits, attention = fresh_process_logits(tmp_path / "hf", document, tmp_path)
    assert attention == "sdpa"
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


KILL_WHILE_SAVING = """
import os, signal, sys
import safetensors.torch
real = safetensors.torch.save_file
def half_then_die(tensors, filename, *args, **kwargs):
    open(filename, "wb").write(b"partial")
    os.kill(os.getpid(), signal.SIGKILL)
safetensors.torch.save_file = half_then_die
sys.argv = ["anchor-lightning", "export", "--ckpt_path", sys.argv[1], "--out", sys.argv[2]]
from anchor_lightning.commands import cli
cli()
"""


@pytest.mark.slow
def test_export_is_whole_or_absent_after_kill_9_and_a_rerun_matches_a_clean_export(tmp_path):
    """kill -9 while the weights are written leaves no half export (the retry used to be refused by the
    export's own guard); the same command again completes, byte for byte as an uninterrupted export;
    exporting over an earlier export replaces it whole."""
    import os
    import subprocess
    import sys

    fragment = checkpoint_fragment(tmp_path, tmp_path / "ckpt")
    main(
        ["fit", "--config", "tests/configs/micro.yaml", "--config", fragment, "--trainer.max_steps=2",
         f"--data.cache_dir={tmp_path / 'cache'}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"]
    )  # fmt: skip
    ckpt = str(tmp_path / "ckpt" / "last.ckpt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILL_WHILE_SAVING, ckpt, str(tmp_path / "hf")], env=env)
    assert killed.returncode == -9
    assert not (tmp_path / "hf").exists()  # nothing that looks like an export
    main(["export", "--ckpt_path", ckpt, "--out", str(tmp_path / "hf")])
    main(["export", "--ckpt_path", ckpt, "--out", str(tmp_path / "clean")])
    assert _files(tmp_path / "hf") == _files(tmp_path / "clean")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]  # the dead writer's leftover is gone
    (tmp_path / "hf" / "stale.txt").write_text("from an earlier export")
    main(["export", "--ckpt_path", ckpt, "--out", str(tmp_path / "hf")])
    assert _files(tmp_path / "hf") == _files(tmp_path / "clean")


@pytest.mark.slow
def test_export_reads_the_weights_without_the_pretrained_files_or_the_training_module(tmp_path, monkeypatch):
    """The run's config travels in its checkpoint: an export after the pretrained model it started from is
    gone gives the trained weights in the plain Hugging Face model, and never builds AnchorLM."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.conftest import tiny_config

    config = tiny_config("llama", vocab_size=258, hidden_size=64, intermediate_size=128, max_position_embeddings=256)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "pretrained")
    fit_micro(
        tmp_path,
        "--model.config=null",
        f"--model.pretrained={tmp_path / 'pretrained'}",
        "--model.rope_theta=40000",
        "--data.tokenizer=bytes",
        "--trainer.max_steps=2",
    )
    document = [256] + list(b"the pretrained files are gone")
    expected = module_logits(str(tmp_path / "ckpt" / "last.ckpt"), document, "shared", 256, (256,))
    import shutil

    shutil.rmtree(tmp_path / "pretrained")
    monkeypatch.setattr("anchor_lightning.model.module.AnchorLM.configure_model", lambda self: 1 / 0)
    main(["export", "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt"), "--out", str(tmp_path / "hf")])
    exported = AutoConfig.from_pretrained(tmp_path / "hf")
    assert exported.rope_parameters["rope_theta"] == 40000
    logits, attention = fresh_process_logits(tmp_path / "hf", document, tmp_path)
    assert attention == "sdpa"
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_a_checkpoint_without_model_weights_is_refused_in_one_line(tmp_path):
    import torch

    from anchor_lightning.errors import UserError
    from anchor_lightning.model.export import plain_model

    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}, "hyper_parameters": {"config": None}}, ckpt)
    with pytest.raises(UserError, match="no model weights"):
        plain_model(str(ckpt))
