"""The LightningModule: a Hugging Face causal LM trained on packed rows with an anchor backend."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import lightning as L
import torch
from transformers import PreTrainedModel

from anchor_lightning.attention.backends import check_backend_layout, default_layout, prepare
from anchor_lightning.checkpoint.gguf import local_checkpoint
from anchor_lightning.checkpoint.identity import KEY as IDENTITY_KEY
from anchor_lightning.checkpoint.identity import (
    STATE_VERSION,
    VERSION_KEY,
    check_same_run,
    check_state_version,
    model_identity,
)
from anchor_lightning.data.batch import Batch
from anchor_lightning.data.packing import check_mode_layout
from anchor_lightning.errors import UserError, require_at_least
from anchor_lightning.loggers import is_logging_step
from anchor_lightning.messages import number, say
from anchor_lightning.model.build import build_model, configure, load_config, rope_base
from anchor_lightning.model.causal_lm import PackedCausalLM
from anchor_lightning.model.checks import check_backend_trains_here, check_run_fits
from anchor_lightning.model.flops import attention_width, matmul_parameters
from anchor_lightning.model.kernel_report import compute_precision
from anchor_lightning.model.nonfinite import NonFiniteGuard, NonFiniteLoss
from anchor_lightning.model.schedule import parameter_groups, warmup_cosine_scheduler
from anchor_lightning.model.speed import Applied, SpeedSettings, apply_speed
from anchor_lightning.model.step import StepSettings, packed_loss
from anchor_lightning.model.step_stats import StepStats, ends_step
from anchor_lightning.model.val_loss import ValidationLoss
from anchor_lightning.parallel.strategy import ShardedStrategy

COUNTERS_KEY = "anchor_lightning_counters"  # running totals kept in checkpoints

OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]


def default_optimizer(params: Iterable) -> torch.optim.Optimizer:
    """The paper's AdamW: lr 2e-5, betas (0.9, 0.95), weight decay 0.1."""
    return torch.optim.AdamW(params, lr=2e-5, betas=(0.9, 0.95), weight_decay=0.1)


class AnchorLM(L.LightningModule):
    """Continued pre-training of a HF causal LM with AnchorAttention (or a baseline mode).

    Args:
        config: HF config for random init: a dict with ``model_type`` (e.g. ``llama``) and fields, or a
            path to a config file/directory. Not used when ``pretrained`` is set (a line says so).
        pretrained: a local HF checkpoint directory, or a ``.gguf`` file (converted once into a cache,
            see ``checkpoint/gguf.py``), to load weights (and config) from.
        mode: ``anchor`` | ``intra_doc`` | ``intra_doc_reset`` | ``full`` (docs/design.md, "Attention modes").
        backend: ``sdpa`` (dense mask; CPU, small rows) | ``varlen`` (FlashAttention over document
            segments: FA3/FA4 on Hopper, flash-attn 2 or PyTorch's kernel; CUDA) |
            ``flex`` (compiled flex attention, CUDA for training).
        layout: ``per_doc`` | ``shared``; None picks shared for anchor mode on sdpa/flex, else per_doc.
        seq_len: slots per row (linked from the top-level ``seq_len``).
        rope_theta: RoPE base written to ``config.rope_parameters`` (5e6 at 64K, 1e7 at 128K in the paper).
        rope_scaling: extra ``rope_parameters`` (e.g. ``{rope_type: linear, factor: 4.0}``).
        activation_checkpointing: recompute decoder layers in backward (less memory, ~30% more compute).
        checkpoint_layers: with activation checkpointing, recompute only the first N decoder layers
            (selective: less recomputation when the others' activations fit); None: all of them.
        offload_activations: with activation checkpointing, keep the checkpointed layer inputs in pinned
            host memory (the longest rows on one GPU; costs host<->device copies).
        mlp_tile: run each decoder layer's MLP over this many slots at a time, each tile recomputed in
            backward (the longest rows: the [T, intermediate] activations never exist at once).
        kernels: fused RMSNorm/RoPE/SwiGLU: ``auto`` (Liger on CUDA when installed) | ``liger`` | ``none``.
        loss: ``auto`` (Liger on CUDA when installed, else chunked) | ``liger`` | ``chunked``.
        loss_chunk_size: rows of logits alive at once in the chunked loss.
        float8: FP8 linear layers (torchao): ``tensorwise`` | ``rowwise``; None (default) trains in bf16.
        float8_layers: which layers convert: ``auto`` (torchao's size rule: where FP8 is faster) | ``all``
            (every decoder linear layer; for checking FP8's loss on small models). model/float8.py.
        float8_compile: compile each FP8 layer (fuses torchao's scaling and casts; eager FP8 is slower
            than bf16); false for debugging.
        compile_layers: compile each decoder layer on its own (regional torch.compile: norms, residual
            adds, RoPE and casts fuse; the first steps take longer while it compiles).
        optimizer: a callable building the optimizer from parameter groups (AdamW by default).
        warmup_steps: linear warm-up steps of the LR schedule.
        min_lr_ratio: the cosine schedule ends at ``lr * min_lr_ratio``.
        on_nonfinite: a non-finite loss or gradient ``stop``s the run (naming the step and its rows;
            checked without a per-step device sync, at the next logging step or checkpoint) or is
            ``skip``ped (that step's update is dropped; costs one device sync per step).
    """

    def __init__(
        self,
        config: dict[str, Any] | str | None = None,
        pretrained: str | None = None,
        mode: Literal["anchor", "intra_doc", "intra_doc_reset", "full"] = "anchor",
        backend: Literal["sdpa", "varlen", "flex"] = "sdpa",
        layout: Literal["per_doc", "shared"] | None = None,
        seq_len: int = 512,
        rope_theta: float | None = None,
        rope_scaling: dict[str, Any] | None = None,
        activation_checkpointing: bool = False,
        checkpoint_layers: int | None = None,
        offload_activations: bool = False,
        mlp_tile: int | None = None,
        kernels: Literal["auto", "liger", "none"] = "auto",
        loss: Literal["auto", "liger", "chunked"] = "auto",
        loss_chunk_size: int = 4096,
        float8: Literal["tensorwise", "rowwise"] | None = None,
        float8_layers: Literal["auto", "all"] = "auto",
        float8_compile: bool = True,
        compile_layers: bool = False,
        optimizer: OptimizerFactory = default_optimizer,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
        on_nonfinite: Literal["stop", "skip"] = "stop",
    ):
        super().__init__()
        # kept in checkpoints (export rebuilds the module from them); the logger gets run_summary() instead
        self.save_hyperparameters(logger=False)
        self.layout = layout or default_layout(backend, mode)
        try:
            check_mode_layout(mode, self.layout)
            check_backend_layout(backend, self.layout)
        except ValueError as err:
            raise UserError(str(err), field="model.mode / model.backend / model.layout") from None
        self.mode, self.backend, self.seq_len = mode, backend, seq_len
        # a .gguf file is converted once into a cached Hugging Face directory (checkpoint/gguf.py)
        self.pretrained = local_checkpoint(pretrained) if pretrained is not None else None
        if pretrained is not None and config is not None:  # a recipe's random-init architecture, said, not silent
            say(
                f"model.config is not used: the architecture comes from {pretrained} (--model.config=null leaves it out)"
            )
        if rope_theta is not None and not rope_theta > 0:
            raise UserError(f"the RoPE base must be positive, got {rope_theta}", field="model.rope_theta")
        loaded = load_config(self.pretrained, config)
        own_base = rope_base(loaded) if self.pretrained is not None else None
        self.hf_config = configure(loaded, seq_len, rope_theta, rope_scaling)
        if own_base is not None and rope_theta is not None and float(rope_theta) != own_base:  # said, not silent
            say(
                f"model.rope_theta {number(rope_theta)} replaces the RoPE base {number(own_base)} of {pretrained} "
                "(--model.rope_theta=null keeps the model's own)"
            )
        self.speed = SpeedSettings(
            kernels,
            activation_checkpointing,
            checkpoint_layers,
            offload_activations,
            mlp_tile,
            loss,
            loss_chunk_size,
            float8,
            float8_layers,
            float8_compile,
            compile_layers,
        )
        self.speed.check()
        self.applied = Applied()  # what configure_model resolved (model/speed.py)
        require_at_least(("model.warmup_steps", warmup_steps, 0))
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise UserError(
                f"must be in [0, 1] (the cosine's end as a share of lr), got {min_lr_ratio}", field="model.min_lr_ratio"
            )
        self.optimizer_factory = optimizer
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.on_nonfinite = on_nonfinite
        self.net: PackedCausalLM | None = None
        self.val_loss = ValidationLoss()  # model/val_loss.py
        self.stats = StepStats()  # what training counts; the callbacks read it (model/step_stats.py)
        self.nonfinite = NonFiniteGuard(on_nonfinite)  # model/nonfinite.py
        self.checkpoint_step: int | None = None  # the step of the checkpoint loaded, if any

    # ------------------------------------------------------------------ model
    @property
    def model(self) -> PreTrainedModel | None:
        """The Hugging Face model (inside :class:`PackedCausalLM`, which adds the loss)."""
        return self.net.lm if self.net is not None else None

    @property
    def packed(self) -> PackedCausalLM:
        """The built model with its loss (``configure_model`` builds it)."""
        if self.net is None:
            raise RuntimeError("the model is not built yet: Lightning calls configure_model first")
        return self.net

    def configure_model(self) -> None:
        """Build the HF model (Lightning calls this once the strategy is set up; under
        :class:`ShardedStrategy` it is built on the meta device and sharded before any memory is used)."""
        if self.net is not None:
            return
        strategy = self._trainer.strategy if self._trainer is not None else None
        net: PackedCausalLM
        if isinstance(strategy, ShardedStrategy):
            net = strategy.build_sharded(  # type: ignore[assignment]  # the module the factory built, sharded
                lambda: PackedCausalLM(build_model(self.hf_config, self.backend)),
                self.pretrained,
                lambda lm: self._speed_up(lm),  # type: ignore[arg-type]  # the factory's .lm
            )
        else:
            net = PackedCausalLM(build_model(self.hf_config, self.backend, self.pretrained))
            self._speed_up(net.lm)
        # from_pretrained returns the model in eval mode and Lightning keeps submodule modes: in eval
        # mode transformers skips activation checkpointing (and dropout)
        net.train()
        self.net = net
        self.matmul_params = matmul_parameters(net)
        self.n_layers, self.d_attn = attention_width(self.hf_config)

    def _speed_up(self, lm: PreTrainedModel) -> None:
        """Fused kernels, FP8, MLP tiling and activation checkpointing, as configured (before sharding)."""
        device_type = self._trainer.strategy.root_device.type if self._trainer is not None else "cpu"
        compute = compute_precision(self._trainer.precision if self._trainer is not None else None)
        self.applied = apply_speed(lm, self.speed, device_type, self.backend, self.mode, compute)

    @property
    def varlen_kernel(self) -> str | None:
        """The FlashAttention varlen kernel this run calls (None where none runs)."""
        return self.applied.varlen_kernel

    def setup(self, stage: str) -> None:
        """Refuse a run that cannot work (before any weights are built): model/checks.py, and FP8 where
        the device has none."""
        check_run_fits(self.trainer, self.hf_config, (self.mode, self.layout, self.seq_len))
        check_backend_trains_here(self.backend, stage, self.trainer.strategy.root_device.type)
        self.speed.check_float8(self.trainer.strategy.root_device.type)

    def hidden_states(self, batch: Batch) -> torch.Tensor:
        """Last hidden states [B, T, D] of the packed batch (unsharded models: tests, export)."""
        return self.packed.hidden_states(batch["input_ids"], batch["position_ids"], prepare(batch, self.backend))

    @property
    def sequence_group(self):
        """The ranks sharing each row (Ulysses sequence parallelism), or None."""
        strategy = self._trainer.strategy if self._trainer is not None else None
        return strategy.sequence_group if isinstance(strategy, ShardedStrategy) else None

    @property
    def step_settings(self) -> StepSettings:
        speed = self.speed
        return StepSettings(self.backend, speed.loss, speed.loss_chunk_size, speed.offload_activations)

    def summed_loss(self, batch: Batch) -> torch.Tensor:
        """Sum of the loss over the batch's labelled slots (this rank's, under sequence parallelism)."""
        return packed_loss(self.packed, batch, self.step_settings, self.sequence_group)

    def token_losses(self, batch: Batch) -> torch.Tensor:
        """Per-slot losses [B, T] (0 where unlabelled), at least fp32."""
        return packed_loss(self.packed, batch, self.step_settings, self.sequence_group, "none")

    def run_summary(self) -> dict:
        """What TensorBoard's HPARAMS shows against val/loss: the settings that make runs differ, as
        strings and numbers (TensorBoard ticks the first five by name, so ``mode`` is among them)."""
        trainer = self.trainer
        sampler = getattr(getattr(trainer, "datamodule", None), "train_sampler", None)
        group = trainer.optimizers[0].param_groups[0] if trainer.optimizers else {}
        rope = dict(self.hf_config.rope_parameters or {})
        return {
            "mode": self.mode,
            "backend": self.backend,
            "kernel": self.varlen_kernel or "none",
            "layout": self.layout,
            "seq_len": self.seq_len,
            "rope_theta": float(rope.get("rope_theta", 0.0)),
            "lr": float(group.get("initial_lr", group.get("lr", 0.0))),
            "rows_per_step": int(sampler.rows_per_step) if sampler is not None else 0,
            "parameters_M": round(sum(p.numel() for p in self.parameters()) / 1e6, 3),
            "precision": str(trainer.precision),
            "precision_linear": f"fp8-{self.speed.float8}" if self.speed.float8 else "as precision",
        }

    def on_train_start(self) -> None:
        for logger in self.loggers:
            if hasattr(logger, "log_run"):
                logger.log_run(self.run_summary(), ["val/loss", "val/ppl"])
            else:
                logger.log_hyperparams(self.run_summary())

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        total = self.summed_loss(batch)
        self.stats.current.add(total.detach() / batch["step_targets"], batch)
        if ends_step(self.trainer, batch_idx):
            # this rank's share: a sequence group splits every row's work between its ranks
            strategy = self.trainer.strategy
            sequence_ranks = strategy.sequence_parallel_size if isinstance(strategy, ShardedStrategy) else 1
            flops = self.stats.current.flops(self.matmul_params, self.n_layers, self.d_attn) / sequence_ranks
            self.stats.finish(self.global_step, batch["step_tokens"], flops)
        # Lightning divides by accumulate_grad_batches and DDP/FSDP average over ranks: undo both, so the
        # gradient is that of (sum of losses over the whole step) / (labelled slots of the whole step).
        return total * (self.trainer.accumulate_grad_batches * self.trainer.world_size / batch["step_targets"])

    def on_train_batch_end(self, outputs, batch: Batch, batch_idx: int) -> None:
        if not ends_step(self.trainer, batch_idx):
            return
        # log only when Lightning writes to the loggers: reading a logged tensor is a device sync
        if not is_logging_step(self.trainer):
            return
        self.check_finite()
        step = self.stats.last
        self.stats.logged(self.global_step - 1)
        loss = step.loss
        if loss is None:  # no step has finished on this rank yet
            return
        if self.trainer.world_size > 1:  # each rank holds its share of the step's token-weighted mean
            loss = self.trainer.strategy.reduce(loss.clone(), reduce_op="sum")
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ppl", torch.exp(loss))
        self.log("train/tokens_seen", float(self.stats.tokens_seen))
        self.log("train/docs_per_row", step.docs / max(1, len(step.rows)))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        if self.on_nonfinite == "skip":
            self.log("train/skipped_steps", float(self.stats.skipped_steps))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by the global gradient norm (``trainer.gradient_clip_val``; none if unset), log the norm,
        and watch for non-finite gradients (``on_nonfinite``).

        Done here with torch rather than by Lightning's precision plugin, which refuses fused optimizers
        under mixed precision even for bf16, where no gradient scaler exists.
        """
        if (
            gradient_clip_algorithm is not None
            and str(getattr(gradient_clip_algorithm, "value", gradient_clip_algorithm)) != "norm"
        ):
            raise UserError("only norm clipping is supported", field="trainer.gradient_clip_algorithm")
        max_norm = float(gradient_clip_val) if gradient_clip_val else float("inf")
        params = [p for p in self.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        if self.nonfinite.after_clip(norm, params, self.global_step):
            self.stats.skipped_steps += 1
        if is_logging_step(self.trainer, self.trainer.global_step + 1):  # the step is not counted yet
            self.log("train/grad_norm", norm)

    def check_finite(self) -> None:
        """Stop with the first non-finite step and its rows (a device sync: called at log steps)."""
        self.nonfinite.check(self.stats.rows, self.global_rank)

    def run_identity(self) -> dict:
        """The settings that make this run's model and rows what they are (checkpoint/identity.py)."""
        return model_identity(self.mode, self.layout, self.seq_len, self.hf_config)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.check_finite()  # never save weights a non-finite step has touched
        checkpoint[VERSION_KEY] = STATE_VERSION
        checkpoint[IDENTITY_KEY] = self.run_identity()
        # the running totals behind train/tokens_seen (and MFU, skipped steps) go on after a resume
        checkpoint[COUNTERS_KEY] = self.stats.counters()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse to resume a run trained under other settings (mode, layout, row length, model), or a
        checkpoint whose state a newer package wrote."""
        check_state_version(checkpoint)
        check_same_run(checkpoint.get(IDENTITY_KEY), self.run_identity(), "model settings", "model")
        self.stats.restore(checkpoint.get(COUNTERS_KEY, {}))
        # the step the weights were saved at: validate does not restore the trainer's step, which stays 0
        self.checkpoint_step = checkpoint.get("global_step")

    def on_train_end(self) -> None:
        self.check_finite()

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.val_loss.update(self.summed_loss(batch), batch["num_targets"])

    def on_validation_epoch_end(self) -> None:
        loss, nonfinite = self.val_loss.compute()
        if loss is not None:
            self.log("val/loss", loss, prog_bar=True)
            self.log("val/ppl", torch.exp(loss))
            self.log("val/nonfinite_batches", float(nonfinite))
        if nonfinite and self.on_nonfinite == "stop":
            for logger in self.loggers:  # the NaN reaches TensorBoard before the run stops
                logger.log_metrics(
                    {"val/loss": float("nan"), "val/nonfinite_batches": float(nonfinite)}, self.global_step
                )
                logger.save()
            raise NonFiniteLoss(
                f"the validation loss is not finite ({nonfinite} batches): the model is broken (a NaN weight, a RoPE "
                "base of 0 ...); the run stops here; set model.on_nonfinite=skip to report NaN and go on",
                field="model.on_nonfinite",
            )

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(parameter_groups(self.net))
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise UserError(
                "set trainer.max_steps (or max_epochs) so the LR schedule knows its length", field="trainer.max_steps"
            )
        scheduler = warmup_cosine_scheduler(optimizer, self.warmup_steps, int(total), self.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
