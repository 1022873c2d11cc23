"""How a training run computes, apart from what it computes: the speed and memory settings of
``model.*`` checked in one place (:class:`SpeedSettings`), and applied to a built model in the order
they must happen (:func:`apply_speed`): fused kernels, FP8 linear layers, MLP tiling, activation
checkpointing, compiled layers (:func:`speed_up`), then the varlen kernel and the loss chosen, and the result
announced in one line (``kernel_report.py``). None of them changes the function the model computes
beyond rounding."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from transformers import PreTrainedModel

from anchor_lightning.attention.varlen_kernels import VARLEN_KERNEL_ENV, choose_varlen_kernel, runs_varlen_kernel
from anchor_lightning.errors import UserError, require_at_least
from anchor_lightning.messages import say
from anchor_lightning.model.build import enable_activation_checkpointing
from anchor_lightning.model.float8 import GRAPHS_PER_SHAPE, check_float8, convert_to_float8, device_capability
from anchor_lightning.model.kernel_report import attention_kernel, describe, missing, missing_warning
from anchor_lightning.model.kernels import KERNELS, apply_kernels, compile_decoder_layers, liger_available, tile_mlp
from anchor_lightning.model.loss import LOSS_IMPLEMENTATIONS, resolve_implementation


@dataclass(frozen=True)
class SpeedSettings:
    """``model.kernels`` ... ``model.float8_layers`` (AnchorLM's docstring says what each does)."""

    kernels: str = "auto"
    activation_checkpointing: bool = False
    checkpoint_layers: int | None = None
    offload_activations: bool = False
    mlp_tile: int | None = None
    loss: str = "auto"
    loss_chunk_size: int = 4096
    float8: str | None = None
    float8_layers: str = "auto"
    float8_compile: bool = True
    compile_layers: bool = False

    def check(self) -> None:
        """Refuse, in one line naming the field, what no device can run (before any weights exist)."""
        if self.kernels not in KERNELS:
            raise UserError(
                f"unknown kernels {self.kernels!r} (choose from {', '.join(KERNELS)})", field="model.kernels"
            )
        if self.loss not in LOSS_IMPLEMENTATIONS:
            choices = ", ".join(LOSS_IMPLEMENTATIONS)
            raise UserError(f"unknown loss {self.loss!r} (choose from {choices})", field="model.loss")
        if (self.checkpoint_layers is not None or self.offload_activations) and not self.activation_checkpointing:
            raise UserError(
                "checkpoint_layers and offload_activations need activation_checkpointing: true",
                field="model.activation_checkpointing",
            )
        require_at_least(
            ("model.loss_chunk_size", self.loss_chunk_size, 1), ("model.checkpoint_layers", self.checkpoint_layers, 0)
        )
        if self.mlp_tile is not None and self.mlp_tile <= 0:
            raise UserError(f"mlp_tile must be a positive number of slots, got {self.mlp_tile}", field="model.mlp_tile")
        self.check_float8(None)

    def check_float8(self, device_type: str | None) -> None:
        """The FP8 setting's names, and with a device, whether that device runs FP8 matmuls."""
        capability = device_capability(device_type) if device_type is not None else None
        try:
            check_float8(self.float8, self.float8_layers, device_type, capability)
        except ValueError as err:
            raise UserError(str(err), field="model.float8") from None


@dataclass
class Applied:
    """What :func:`apply_speed` resolved (``auto`` decided): for the banner, HPARAMS and the tests."""

    kernels: str = "none"
    loss: str = "chunked"
    varlen_kernel: str | None = None  # None where no FlashAttention varlen kernel runs
    float8_converted: list[str] = field(default_factory=list)


def speed_up(lm: PreTrainedModel, settings: SpeedSettings, device_type: str) -> tuple[str, list[str]]:
    """The settings applied to ``lm`` in the order they must happen: fused kernels first (Liger rebinds
    the MLP's forward, which the tiling then wraps), FP8 linear layers before checkpointing (as torchao
    asks), decoder layers compiled last. Returns the kernels applied and the layers converted to FP8.
    Offloading is a context around the forward pass (``kernels.offloaded_activations``)."""
    applied = apply_kernels(lm, settings.kernels, device_type)
    converted = []
    if settings.float8 is not None:
        converted = convert_to_float8(lm, settings.float8, settings.float8_layers, settings.float8_compile)
    if settings.mlp_tile is not None:
        tile_mlp(lm, settings.mlp_tile)
    if settings.activation_checkpointing:
        enable_activation_checkpointing(lm, settings.checkpoint_layers)
    if settings.compile_layers:
        compile_decoder_layers(lm)
    return applied, converted


def apply_speed(
    lm: PreTrainedModel, settings: SpeedSettings, device_type: str, backend: str, mode: str, compute: str
) -> Applied:
    """Apply ``settings`` to ``lm`` (built, before sharding) for a run on ``device_type`` whose matmuls run
    in ``compute`` (``kernel_report.compute_precision``); say what runs."""
    settings.check_float8(device_type)
    limit = torch._dynamo.config.recompile_limit
    try:
        kernels, converted = speed_up(lm, settings, device_type)
    except ValueError as err:
        raise UserError(str(err), field="model.kernels") from None
    try:
        loss = resolve_implementation(settings.loss, torch.device(device_type))
    except ValueError as err:
        raise UserError(str(err), field="model.loss") from None
    applied = Applied(kernels, loss, _varlen_kernel(backend, mode, device_type), converted)
    linears = sum(isinstance(module, torch.nn.Linear) for module in lm.modules())
    attention = attention_kernel(backend, mode, device_type, applied.varlen_kernel)
    line = describe(attention, kernels, loss, settings.float8, len(converted), linears, compute=compute)
    rank_zero_only(say)(line + (f" ({VARLEN_KERNEL_ENV} chooses the varlen kernel)" if applied.varlen_kernel else ""))
    if torch._dynamo.config.recompile_limit != limit:
        rank_zero_only(say)(
            f"torch.compile's recompile_limit raised from {limit} to {torch._dynamo.config.recompile_limit}:"
            f" room for the compiled FP8 layers' graphs, {GRAPHS_PER_SHAPE} per weight shape (model/float8.py)"
        )
    wanted = missing(
        device_type, device_capability(device_type), backend, mode, applied.varlen_kernel, liger_available()
    )
    if wanted:
        rank_zero_warn(missing_warning(wanted))
    return applied


def _varlen_kernel(backend: str, mode: str, device_type: str) -> str | None:
    """The FlashAttention kernel the varlen backend will call (None where none runs), chosen before
    training so that a kernel named in the environment but missing stops the run now."""
    if not runs_varlen_kernel(backend, mode, device_type):
        return None
    try:
        return choose_varlen_kernel()
    except (ValueError, RuntimeError) as err:
        raise UserError(str(err), field=VARLEN_KERNEL_ENV) from None
