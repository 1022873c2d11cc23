"""Build a Hugging Face causal LM wired to an anchor attention backend.

The model comes from a local checkpoint directory (``from_pretrained``) or from a config (random
init: the embedded default and benchmarks). Nothing of transformers is copied or patched: the
attention function is chosen by name (``anchor_sdpa`` / ``anchor_varlen`` / ``anchor_flex``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from anchor_lightning.attention.backends import IMPLEMENTATION_NAMES
from anchor_lightning.errors import RunWarning, UserError

log = logging.getLogger(__name__)

# Families whose attention call follows the llama pattern (RoPE on q/k, then the attention interface)
# and that the tests cover.
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")


def load_config(pretrained: str | None, config: dict[str, Any] | str | None) -> PretrainedConfig:
    """The HF config: from a checkpoint directory, a config directory/file, or a dict with ``model_type``."""
    if pretrained is not None:
        path = Path(pretrained)
        if not (path / "config.json").is_file():
            raise UserError(
                f"{path}: not a Hugging Face checkpoint directory (no config.json) nor a .gguf file",
                field="model.pretrained",
            )
        return AutoConfig.from_pretrained(path)
    if config is None:
        raise UserError(
            "no model given: --model.pretrained=PATH (a Hugging Face checkpoint directory or a .gguf file), "
            "or a model.config for a random init",
            field="model.pretrained / model.config",
        )
    if isinstance(config, str):
        path = Path(config)
        if not path.exists():
            raise UserError(f"{path}: no such config file or directory", field="model.config")
        return AutoConfig.from_pretrained(path)
    fields = dict(config)
    model_type = fields.pop("model_type", None)
    if model_type is None:
        raise UserError("the config needs a 'model_type' (e.g. llama)", field="model.config.model_type")
    check_architecture(model_type)
    return AutoConfig.for_model(model_type, **fields)


def check_architecture(model_type: str) -> None:
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise UserError(
            f"unsupported architecture {model_type!r} (supported: {', '.join(SUPPORTED_ARCHITECTURES)})",
            field="model_type",
        )


def sliding_window_of(config: PretrainedConfig) -> int | None:
    """The window the model's attention layers would pass, or None when every layer is full attention."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if window is None or (layer_types is not None and "sliding_attention" not in layer_types):
        return None
    return int(window)


def rope_base(config: PretrainedConfig) -> float | None:
    """The RoPE base a config gives (``rope_parameters`` in transformers 5.x, else ``rope_theta``)."""
    base = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", None))
    return float(base) if base is not None else None


def configure(
    config: PretrainedConfig,
    seq_len: int,
    rope_theta: float | None = None,
    rope_scaling: dict[str, Any] | None = None,
    fix: str = "set model.rope_theta or model.rope_scaling",
) -> PretrainedConfig:
    """Apply the recipe's RoPE settings and check the model can train rows of ``seq_len`` slots (``fix``:
    what the warning for rows past the trained positions advises; the inference tools name their flag)."""
    check_architecture(config.model_type)
    config.use_cache = False
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if rope_theta is not None:
        rope["rope_theta"] = float(rope_theta)
    if rope_scaling is not None:
        rope.update(rope_scaling)
    if rope:
        # transformers 5.x reads the base from rope_parameters; config.rope_theta is ignored
        config.rope_parameters = rope
    window = sliding_window_of(config)
    if window is not None and window < seq_len:
        raise UserError(
            f"the {config.model_type} config uses a sliding window of {window} tokens, shorter than the row length "
            f"{seq_len}; AnchorAttention does not implement sliding windows (a model whose config has sliding_window: null)",
            field="model.config.sliding_window",
        )
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and seq_len > limit and rope_theta is None and rope.get("rope_type", "default") == "default":
        warnings.warn(
            f"rows of {seq_len} slots exceed max_position_embeddings={limit} with the model's own RoPE base and no "
            f"scaling: positions beyond it were never seen in pre-training ({fix})",
            category=RunWarning,
            stacklevel=2,
        )
    return config


def build_model(
    config: PretrainedConfig,
    backend: str,
    pretrained: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> PreTrainedModel:
    """Instantiate the model (weights from ``pretrained`` if given, else random) with the backend."""
    implementation = IMPLEMENTATION_NAMES[backend]
    if pretrained is not None:
        model = AutoModelForCausalLM.from_pretrained(
            pretrained, config=config, attn_implementation=implementation, dtype=dtype
        )
    else:
        model = AutoModelForCausalLM.from_config(config, attn_implementation=implementation, dtype=dtype)
    return model


def enable_activation_checkpointing(model: PreTrainedModel, layers: int | None = None) -> None:
    """Recompute decoder layers in the backward pass (non-reentrant): all of them, or the first
    ``layers`` (selective: less recomputation where memory allows). Each layer's input is saved through
    autograd's saved-tensor hooks, so :func:`anchor_lightning.model.kernels.offloaded_activations` can
    keep it in host memory. (transformers 5.24 renamed the method and its argument; 5.17 has only the
    old names.)"""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    if layers is not None:
        decoder: nn.ModuleList = model.base_model.layers  # type: ignore[assignment]  # every supported family
        if not 0 <= layers <= len(decoder):
            raise UserError(
                f"cannot checkpoint {layers} of the model's {len(decoder)} decoder layers",
                field="model.checkpoint_layers",
            )
        for layer in list(decoder)[layers:]:
            layer.gradient_checkpointing = False  # type: ignore[assignment]  # a decoder layer's switch


def vocab_size(model: PreTrainedModel) -> int:
    embeddings: Any = model.get_input_embeddings()
    return int(embeddings.num_embeddings)
