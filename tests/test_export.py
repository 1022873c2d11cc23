"""A checkpoint exported to a Hugging Face directory loads in a fresh process without this package and
gives the trained module's logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from anchor_lightning.checkpoint.export import load_module
from anchor_lightning.commands import main
from anchor_lightning.data.batch import collate_rows
from anchor_lightning.data.packing import PackingSpec, pack_documents

ROOT = Path(__file__).resolve().parents[1]

FRESH = """
import json, sys
import numpy as np, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor([json.loads(sys.argv[2])])
with torch.no_grad():
    logits = model(input_ids=ids).logits[0]
np.save(sys.argv[3], logits.numpy())
assert not any(name.startswith("anchor_lightning") for name in sys.modules), "imported anchor_lightning"
print(model.config._attn_implementation)
"""


@pytest.mark.slow
def test_export_loads_in_a_fresh_process_and_matches(tmp_path):
    fragment = tmp_path / "ckpt.yaml"
    fragment.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "enable_checkpointing": True,
                    "callbacks": [
                        {
                            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                            "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True},
                        }
                    ],
                }
            }
        )
    )
    main(
        [
            "fit",
            "--config",
            "tests/configs/micro.yaml",
            "--config",
            str(fragment),
            "--trainer.max_steps=3",
            f"--data.cache_dir={tmp_path / 'cache'}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        ]
    )
    main(["export", "--ckpt", str(tmp_path / "ckpt" / "last.ckpt"), "--out", str(tmp_path / "hf")])
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
    module, _ = load_module(str(tmp_path / "ckpt" / "last.ckpt"))
    rows, _ = pack_documents([document], PackingSpec(len(document), "shared", 256, (256,)))
    batch = collate_rows(rows, "anchor", "shared")
    with torch.no_grad():
        hidden = module.hidden_states(batch)
        expected = (hidden @ module.model.get_output_embeddings().weight.t())[0].numpy()

    out = tmp_path / "logits.npy"
    result = subprocess.run(
        [sys.executable, "-c", FRESH, str(tmp_path / "hf"), json.dumps(document), str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("sdpa")
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-4, atol=1e-4)
