"""Model construction: RoPE settings from YAML, scaling types, warnings and refusals."""

from __future__ import annotations

import warnings

import pytest
import torch

from anchor_lightning.attention.backends import prepare
from anchor_lightning.errors import RunWarning, UserError
from anchor_lightning.model.build import build_model, configure, load_config
from tests.conftest import FIRST, packed_batch, tiny_config

SCALINGS = [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "dynamic", "factor": 4.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
]


@pytest.mark.parametrize("scaling", SCALINGS, ids=lambda s: s["rope_type"])
def test_rope_scaling_types_are_applied_and_run(scaling):
    config = configure(tiny_config("llama", max_position_embeddings=64), 256, rope_theta=5e5, rope_scaling=scaling)
    assert config.rope_parameters["rope_type"] == scaling["rope_type"]
    assert config.rope_parameters["rope_theta"] == 5e5
    model = build_model(config, "sdpa")
    rotary = model.model.rotary_emb
    assert rotary.rope_type == scaling["rope_type"]
    batch, _ = packed_batch([[FIRST] + list(range(5, 60))] * 3, 256, "anchor", "shared")
    with torch.no_grad():
        out = model.base_model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], anchor_attention=prepare(batch, "sdpa")
        )
    assert torch.isfinite(out.last_hidden_state).all()


def test_rope_base_changes_the_frequencies():
    low = build_model(configure(tiny_config("llama"), 64, rope_theta=1e4), "sdpa").model.rotary_emb.inv_freq
    high = build_model(configure(tiny_config("llama"), 64, rope_theta=5e6), "sdpa").model.rotary_emb.inv_freq
    assert high[-1] < low[-1] and high[0] == low[0] == 1.0


def test_rows_beyond_the_trained_length_warn_without_a_new_base_or_scaling():
    with pytest.warns(RunWarning, match=r"exceed max_position_embeddings=64 .* \(set model.rope_theta or model"):
        configure(tiny_config("llama", max_position_embeddings=64), 128)
    with pytest.warns(RunWarning, match=r"pre-training \(--rope_theta evaluates"):  # the inference tools' advice
        configure(tiny_config("llama", max_position_embeddings=64), 128, fix="--rope_theta evaluates it elsewhere")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        configure(tiny_config("llama", max_position_embeddings=64), 128, rope_theta=5e6)
        configure(
            tiny_config("llama", max_position_embeddings=64), 128, rope_scaling={"rope_type": "linear", "factor": 2.0}
        )


def test_a_sliding_window_shorter_than_the_row_is_refused():
    config = tiny_config("mistral")
    config.sliding_window = 32
    with pytest.raises(UserError, match="sliding window of 32 tokens, shorter than the row length 64"):
        configure(config, 64)
    configure(config, 32)  # a window as long as the row changes nothing


def test_no_model_at_all_names_both_ways_to_give_one():
    with pytest.raises(
        UserError, match=r"no model given: --model.pretrained=PATH .* or a model.config for a random init"
    ):
        load_config(None, None)


def test_unsupported_architecture_is_refused():
    with pytest.raises(UserError, match="unsupported architecture 'gpt2'"):
        load_config(None, {"model_type": "gpt2"})


def test_a_config_beside_a_pretrained_model_is_said_not_used(tmp_path, capsys):
    """A recipe's random-init architecture under --model.pretrained is not used, and the run says so."""
    from transformers import AutoModelForCausalLM

    from anchor_lightning.model.module import AnchorLM

    AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=258)).save_pretrained(tmp_path / "hf")
    architecture = {"model_type": "llama", "vocab_size": 258, "hidden_size": 8, "num_attention_heads": 2}
    module = AnchorLM(config=architecture, pretrained=str(tmp_path / "hf"), seq_len=64)
    said = capsys.readouterr().out
    assert f"model.config is not used: the architecture comes from {tmp_path / 'hf'}" in said, said
    assert module.hf_config.hidden_size == tiny_config("llama").hidden_size != 8
    AnchorLM(pretrained=str(tmp_path / "hf"), seq_len=64)
    AnchorLM(config=architecture, seq_len=64)
    assert "model.config" not in capsys.readouterr().out


def test_a_recipe_base_that_replaces_a_pretrained_models_own_is_said(tmp_path, capsys):
    """A recipe's model.rope_theta over a pretrained model's own base is applied and said, never silent;
    the same base, or none, says nothing."""
    from transformers import AutoModelForCausalLM

    from anchor_lightning.model.build import rope_base
    from anchor_lightning.model.module import AnchorLM

    config = tiny_config("llama", vocab_size=258)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 100000.0}
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "hf")
    module = AnchorLM(pretrained=str(tmp_path / "hf"), seq_len=64, rope_theta=2236068.0)
    said = capsys.readouterr().out
    assert (
        f"model.rope_theta 2,236,068 replaces the RoPE base 100,000 of {tmp_path / 'hf'} "
        "(--model.rope_theta=null keeps the model's own)"
    ) in said, said
    assert rope_base(module.hf_config) == 2236068.0
    assert rope_base(AnchorLM(pretrained=str(tmp_path / "hf"), seq_len=64, rope_theta=1e5).hf_config) == 1e5
    assert rope_base(AnchorLM(pretrained=str(tmp_path / "hf"), seq_len=64).hf_config) == 1e5
    assert "rope_theta" not in capsys.readouterr().out
