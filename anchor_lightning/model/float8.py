"""FP8 training of the decoder's linear layers, through torchao's ``Float8Linear``.

``model.float8`` names torchao's recipe: ``tensorwise`` (one scale per tensor: the fastest) or
``rowwise`` (one scale per row: more accurate); None (the default) trains in bf16. Which layers
convert (``model.float8_layers``):

* ``auto``: torchao's own rule for the recipe (``_auto_filter_for_recipe``: dimensions multiples of 16
  and large enough that FP8 is faster on an H100). On Llama-3.2-1B's shape tensorwise converts all
  but the K/V projections and rowwise only gate_proj and up_proj; on SmolLM2-135M's (hidden 576)
  tensorwise converts gate_proj and up_proj, rowwise nothing.
* ``all``: every linear layer of the decoder whose dimensions are multiples of 16 (what the FP8 cast
  needs), however small: for checking FP8's effect on a small model's loss, not for speed.

The LM head (its logits feed the loss; the fused losses read its weight directly), the embeddings
(not linear layers) and everything outside the decoder layers stay in bf16. ``Float8Linear`` keeps
the weight in high precision and the parameter names of ``nn.Linear``, so checkpoints, resume and
export read and write the same tensors as a bf16 run; only the matmuls cast to FP8. The conversion
happens before sharding and activation checkpointing (``speed.speed_up``), as torchao requires.
Each converted layer is compiled by default (``model.float8_compile``): torchao's FP8 training is
meant to run compiled, and eagerly it is slower than bf16 (0.48x tensorwise, 0.63x rowwise on the 1B
shape at 32K on an H100, docs/results.md).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
from torch import nn

FLOAT8_RECIPES = ("tensorwise", "rowwise")
FLOAT8_LAYERS = ("auto", "all")
INSTALL = "pip install 'anchor-lightning[gpu]' (or torchao==0.18.0)"


def check_float8(
    recipe: str | None, layers: str, device_type: str | None = None, capability: tuple[int, int] | None = None
) -> None:
    """Refuse, in one line, an FP8 setting that cannot run: an unknown recipe or layer rule; with a
    ``device_type``, also a device without FP8 matmuls (CUDA compute capability 8.9+: Ada, Hopper,
    Blackwell) or torchao missing."""
    if layers not in FLOAT8_LAYERS:
        raise ValueError(f"unknown float8_layers {layers!r} (choose from {', '.join(FLOAT8_LAYERS)})")
    if recipe is None:
        return
    if recipe not in FLOAT8_RECIPES:
        raise ValueError(f"unknown float8 recipe {recipe!r} (choose from {', '.join(FLOAT8_RECIPES)}, or null)")
    if device_type is None:
        return
    if device_type != "cuda" or capability is None or capability < (8, 9):
        where = device_type if capability is None else f"a GPU of compute capability {capability[0]}.{capability[1]}"
        raise ValueError(f"float8 needs a CUDA GPU with FP8 matmuls (compute capability 8.9+), not {where}")
    if importlib.util.find_spec("torchao") is None:
        raise ValueError(f"float8 needs torchao: {INSTALL}")


def decoder_linear(module: nn.Module, fqn: str) -> bool:
    """A linear layer inside a decoder layer whose dimensions FP8 matmuls take (multiples of 16)."""
    if not isinstance(module, nn.Linear) or ".layers." not in f".{fqn}":
        return False
    out_features, in_features = module.weight.shape
    return out_features % 16 == 0 and in_features % 16 == 0


def layer_filter(recipe: str, layers: str) -> Callable[[nn.Module, str], bool]:
    """Which modules convert (torchao's ``module_filter_fn``: called with every module and its name)."""
    if layers == "all":
        return decoder_linear
    from torchao.float8 import _auto_filter_for_recipe

    auto = _auto_filter_for_recipe(recipe, filter_fqns=["lm_head"])
    return lambda module, fqn: decoder_linear(module, fqn) and auto(module, fqn)


def convert_to_float8(lm: nn.Module, recipe: str, layers: str = "auto", compiled: bool = False) -> list[str]:
    """Swap the chosen linear layers of ``lm`` for torchao's ``Float8Linear`` (in place); returns
    their names (empty: nothing was large enough, which the banner says). ``compiled``: each converted
    layer is compiled (``nn.Module.compile``, at its first call), which fuses torchao's scale and cast
    kernels; run eagerly they cost more than the FP8 matmuls save (docs/results.md)."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    chosen = layer_filter(recipe, layers)
    names = [name for name, module in lm.named_modules() if chosen(module, name)]
    if names:
        convert_to_float8_training(lm, module_filter_fn=chosen, config=Float8LinearConfig.from_recipe_name(recipe))
    if compiled:
        make_room_for_graphs(GRAPHS_PER_SHAPE * len({lm.get_submodule(name).weight.shape for name in names}))
        for name in names:
            lm.get_submodule(name).compile()
    return names


# Every converted layer runs one function (Float8Linear.forward), so torch.compile counts the graphs of
# all of them against one recompile limit (8 by default): one per weight shape and per state a run
# calls the layers in. fit calls them with and without gradients (training, validation), under
# autocast with and without its cache (Lightning's forward, the RULER callback), on fp32 and bf16
# inputs (after a norm, after attention), at a fixed and then a dynamic length (generation): up to
# 16 per shape. Past the limit a layer silently runs eagerly, at half the speed of bf16
# (float8_compile's reason to be), and under activation checkpointing the recomputation may save
# other tensors than the forward did.
GRAPHS_PER_SHAPE = 16


def make_room_for_graphs(graphs: int) -> None:
    """Raise torch.compile's recompile limit to ``graphs`` where it is lower (never lower it)."""
    import torch._dynamo.config

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, graphs)


def device_capability(device_type: str) -> tuple[int, int] | None:
    """The CUDA compute capability of the current device, or None off CUDA."""
    return torch.cuda.get_device_capability() if device_type == "cuda" and torch.cuda.is_available() else None
