"""Fused kernels and memory savers applied to a built model instance.

* :func:`apply_kernels`: Liger's Triton kernels for RMSNorm, RoPE and SwiGLU (the loss is fused
  separately, in ``loss.py``), through Liger's own ``apply_liger_kernel_to_<model_type>(model=...)``.
  Liger patches the model instance and, as its API does, the transformers modeling module of that
  family (``apply_rotary_pos_emb``, the norm and MLP classes) for models built later in the process.
* :func:`tile_mlp`: the MLP of each decoder layer runs over slices of the row, each recomputed in the
  backward pass, so the [T, intermediate] activations of a very long row never exist at once.
* FP8 linear layers (``float8.py``), when ``model.float8`` names a recipe.
* :func:`compile_decoder_layers`: each decoder layer compiled on its own (``model.compile_layers``);
  :func:`without_new_graphs` keeps evaluations inside training from compiling graphs of their own.
* :func:`enable_activation_checkpointing` (in ``build.py``) and :func:`offloaded_activations`: recompute
  decoder layers in backward, optionally keeping the checkpointed layer inputs in pinned host memory.

``speed.speed_up`` applies them in the order they must happen, from the run's settings.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
from types import MethodType
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

KERNELS = ("auto", "liger", "none")


@functools.cache
def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def resolve_kernels(name: str, device_type: str) -> str:
    """``auto``: Liger on CUDA when installed, else none; ``liger`` where it cannot run is an error."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernels {name!r} (choose from {', '.join(KERNELS)})")
    if name == "auto":
        return "liger" if device_type == "cuda" and liger_available() else "none"
    if name == "liger" and not (device_type == "cuda" and liger_available()):
        raise ValueError("kernels 'liger' need liger-kernel and a CUDA device")
    return name


def apply_kernels(lm: PreTrainedModel, name: str, device_type: str) -> str:
    """Swap in fused RMSNorm/RoPE/SwiGLU kernels; returns what was applied (``liger`` or ``none``)."""
    name = resolve_kernels(name, device_type)
    if name == "liger":
        liger = importlib.import_module("liger_kernel.transformers")
        apply = getattr(liger, f"apply_liger_kernel_to_{lm.config.model_type}")
        apply(rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False, model=lm)
    return name


def tile_mlp(lm: PreTrainedModel, tile: int) -> None:
    """Run every decoder layer's MLP over ``tile`` slots at a time, each tile recomputed in backward.

    The MLP is position-wise, so the result is the same function; its parameters and state-dict keys
    are untouched (only the instance's ``forward`` is wrapped)."""
    if tile <= 0:
        raise ValueError(f"the MLP tile must be a positive number of slots, got {tile}")
    layers: nn.ModuleList = lm.base_model.layers  # type: ignore[assignment]  # every supported family
    for layer in layers:
        mlp: Any = layer.mlp
        if getattr(mlp, "_anchor_tile", None) is not None:
            mlp._anchor_tile = tile
            continue
        mlp._anchor_tile = tile
        mlp._anchor_untiled_forward = mlp.forward
        mlp.forward = MethodType(_tiled_forward, mlp)


def _tiled_forward(self, x: torch.Tensor) -> torch.Tensor:
    tile, forward = self._anchor_tile, self._anchor_untiled_forward
    if x.shape[-2] <= tile:
        return forward(x)
    pieces = []
    for piece in x.split(tile, dim=-2):
        if torch.is_grad_enabled() and piece.requires_grad:
            pieces.append(checkpoint(forward, piece, use_reentrant=False))
        else:
            pieces.append(forward(piece))
    return torch.cat(pieces, dim=-2)


def offloaded_activations(enabled: bool):
    """A context for the forward pass: tensors saved for backward go to pinned host memory. With
    activation checkpointing these are mostly the decoder layers' inputs (what a recomputed layer
    saves in the backward pass stays on the device)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available())


def compile_decoder_layers(lm: PreTrainedModel) -> None:
    """Compile each decoder layer on its own (``nn.Module.compile``, at its first call; torchtitan's
    regional compilation): the norms, residual adds, RoPE and casts between the matmuls and attention
    fuse, and every layer reuses one compiled graph. Activation checkpointing wraps the compiled layer;
    state-dict keys are unchanged."""
    layers: nn.ModuleList = lm.base_model.layers  # type: ignore[assignment]  # every supported family
    for layer in layers:
        layer.compile()


def without_new_graphs() -> contextlib.AbstractContextManager:
    """Inside: compiled modules (FP8 layers, ``compile_layers``) run the graphs they have and run
    eagerly where none fits, compiling nothing. For the evaluations inside training (the callbacks):
    their states (no gradients, SDPA instead of the training kernel, generation's KV cache, one per
    layer) would each compile graphs of their own, minutes of compile time that also use up the
    recompile limit training's own graphs need."""
    return torch.compiler.set_stance("eager_on_recompile")
