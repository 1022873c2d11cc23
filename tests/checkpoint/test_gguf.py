"""GGUF checkpoints: the real SmolLM2-135M file converted once into a cached Hugging Face directory,
its tokenizer's ids, and the one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from anchor_lightning.checkpoint import gguf
from anchor_lightning.data.tokenizer import load_tokenizer
from anchor_lightning.errors import UserError
from anchor_lightning.paths import file_sha256
from tests.conftest import SMOLLM2_GGUF, needs_smollm2


@pytest.fixture(scope="module")
def converted() -> Path:
    return Path(gguf.local_checkpoint(SMOLLM2_GGUF))


@pytest.mark.slow
@needs_smollm2
def test_a_gguf_file_becomes_a_cached_float_checkpoint_named_by_its_bytes(converted):
    assert converted.parent == gguf.cache_root()
    assert not str(converted).startswith(str(Path(__file__).resolve().parents[2]))  # never inside the working tree
    source = json.loads((converted / gguf.SOURCE_FILE).read_text())
    assert source["sha256"] == file_sha256(SMOLLM2_GGUF) and converted.name.startswith(source["sha256"][:24])
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (
        "llama",
        30,
        576,
        49152,
    )
    assert config["rope_parameters"]["rope_theta"] == 100000.0 and config["max_position_embeddings"] == 8192
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert gguf.local_checkpoint(SMOLLM2_GGUF) == str(converted)  # second use: the cache, not a new conversion
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
@needs_smollm2
def test_the_converted_weights_give_the_gguf_models_logits(converted):
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[0, 504, 3575, 282, 4649, 314]])
    direct = AutoModelForCausalLM.from_pretrained(
        str(SMOLLM2_GGUF.parent), gguf_file=SMOLLM2_GGUF.name, dtype=torch.float32
    )
    plain = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    assert plain.config.tie_word_embeddings
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, direct(ids).logits, rtol=0, atol=0)


@pytest.mark.slow
@needs_smollm2
def test_the_gguf_tokenizer_and_its_special_ids(converted):
    tokenizer = load_tokenizer(str(SMOLLM2_GGUF))
    assert len(tokenizer) == 49152
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    assert tokenizer.tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert tokenizer.special_ids == {0, 1, 2}
    ids = tokenizer.encode_batch(["The capital of France is Paris."])[0]
    assert ids[0] not in (0, 1, 2) and tokenizer.decode(ids) == "The capital of France is Paris."
    assert load_tokenizer(str(converted)).encode_batch(["def f(x):\n    return x"]) == tokenizer.encode_batch(
        ["def f(x):\n    return x"]
    )


def test_paths_that_are_not_gguf_pass_through(tmp_path):
    assert gguf.local_checkpoint(str(tmp_path)) == str(tmp_path)
    assert gguf.local_checkpoint("org/name") == "org/name"


def test_a_missing_gguf_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no such GGUF file") as err:
        gguf.local_checkpoint(tmp_path / "nothing.gguf")
    assert "\n" not in str(err.value)


def test_without_the_gguf_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + os.urandom(64))
    real = gguf.importlib.util.find_spec
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    with pytest.raises(UserError, match=r"needs gguf .*pip install 'anchor-lightning\[gguf\]'"):
        gguf.local_checkpoint(tmp_path / "model.gguf")


@pytest.mark.skipif(gguf.importlib.util.find_spec("gguf") is None, reason="needs the gguf package")
def test_a_corrupt_gguf_file_is_one_line_and_leaves_no_cache_entry(tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(UserError, match="cannot convert this GGUF file") as err:
        gguf.local_checkpoint(tmp_path / "broken.gguf")
    assert "\n" not in str(err.value)
    digest = file_sha256(tmp_path / "broken.gguf")[:24]
    assert not [p for p in gguf.cache_root().glob("*") if digest in p.name]


@needs_smollm2
@pytest.mark.parametrize("keep", [2000, 50_000_000], ids=["header-cut", "tensors-cut"])
def test_a_truncated_gguf_download_is_named_truncated(tmp_path, keep):
    """The first bytes of the real SmolLM2 GGUF, as an interrupted download leaves them: a cut header was
    a struct.error traceback, cut tensors a reshape error from deep inside transformers."""
    cut = tmp_path / "SmolLM2.gguf"
    with open(SMOLLM2_GGUF, "rb") as f:
        cut.write_bytes(f.read(keep))
    with pytest.raises(UserError, match="truncated") as err:
        gguf.local_checkpoint(cut)
    assert "\n" not in str(err.value) and str(cut) in str(err.value)
