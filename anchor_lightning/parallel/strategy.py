"""FSDP2 through Lightning's ``ModelParallelStrategy``, with a 2-D device mesh.

The mesh has a data-parallel dimension (parameters, gradients and optimizer states are sharded over
it) and a second dimension for sequence parallelism (size 1 unless set). Lightning names that second
dimension ``tensor_parallel``; this project uses it for sequence-parallel groups.

The model is built on the meta device, each decoder layer (the classes in the model's
``_no_split_modules``, not a per-family list) and then the root are wrapped with ``fully_shard``,
and only then is memory allocated: each rank holds its shard of the fp32 master weights, computes in
bf16 (``MixedPrecisionPolicy``) and reduces gradients in fp32. Pretrained weights stream from the
safetensors files shard by shard. Checkpoints are sharded (one file per rank, torch.distributed
.checkpoint) and written to a temporary directory that replaces the previous one only when complete.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from transformers import PreTrainedModel

from anchor_lightning.errors import UserError
from anchor_lightning.parallel.weights import load_hf_weights

DATA_PARALLEL = "data_parallel"
SEQUENCE_PARALLEL = "tensor_parallel"  # Lightning's name for the mesh's second dimension


def hf_model(model: nn.Module) -> PreTrainedModel:
    """The Hugging Face model inside ``model`` (or ``model`` itself)."""
    return next(m for m in model.modules() if isinstance(m, PreTrainedModel))


def decoder_layer_classes(model: nn.Module) -> tuple[type, ...]:
    """The classes the HF model says must not be split (its decoder layers): the units to shard."""
    lm = hf_model(model)
    names = set(getattr(lm, "_no_split_modules", None) or [])
    classes = {type(m) for m in lm.modules() if type(m).__name__ in names}
    if not classes:
        raise UserError(
            f"{type(lm).__name__} names no decoder layer class (_no_split_modules) to shard", field="trainer.strategy"
        )
    return tuple(classes)


def build_sharded(
    build: Callable[[], nn.Module],
    mesh,
    device: torch.device,
    pretrained: str | None = None,
    prepare: Callable[[nn.Module], None] | None = None,
    bf16: bool = True,
    reshard_after_forward: bool = True,
    cpu_offload: bool = False,
) -> nn.Module:
    """Build on the meta device, apply ``prepare`` (kernels, checkpointing) to the HF model, shard each
    decoder layer and the root over ``mesh`` (fp32 master shards, bf16 compute when ``bf16``, fp32
    gradient reduction), allocate on ``device``, then load ``pretrained`` or initialise at random."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    with torch.device("meta"):
        model = build()
    if prepare is not None:
        prepare(hf_model(model))
    options = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32),
        "reshard_after_forward": reshard_after_forward,
    }
    if cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=True)
    layers = decoder_layer_classes(model)
    for module in model.modules():
        if isinstance(module, layers):
            fully_shard(module, **options)
    fully_shard(model, **options)
    model.to_empty(device="cpu" if cpu_offload else device)
    lm = hf_model(model)
    lm.initialize_weights()  # random init, and the RoPE buffers either way
    lm.tie_weights()
    if pretrained is not None:
        load_hf_weights(lm, pretrained)
    return model


class ShardedStrategy(ModelParallelStrategy):
    """FSDP2 over all ranks (divided into sequence-parallel groups of ``sequence_parallel_size``).

    Args:
        sequence_parallel_size: ranks that share one row (1: plain FSDP).
        cpu_offload: keep parameters, gradients and optimizer states in pinned host memory (fits
            larger models on fewer GPUs; the optimizer step runs on the CPU and is slow).
        reshard_after_forward: free the gathered layer weights after forward (less memory, one more
            all-gather in backward).
    """

    def __init__(
        self,
        sequence_parallel_size: int = 1,
        cpu_offload: bool = False,
        reshard_after_forward: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(tensor_parallel_size=sequence_parallel_size, **kwargs)
        self.sequence_parallel_size = sequence_parallel_size
        self.cpu_offload, self.reshard_after_forward = cpu_offload, reshard_after_forward

    def setup_environment(self) -> None:
        world = self.num_nodes * self.num_processes
        if world % self.sequence_parallel_size:
            raise UserError(
                f"{world} ranks cannot be split into sequence-parallel groups of {self.sequence_parallel_size}",
                field="trainer.strategy.init_args.sequence_parallel_size",
            )
        self._data_parallel_size = world // self.sequence_parallel_size
        super().setup_environment()

    @property
    def data_parallel_size(self) -> int:
        """Ranks that read different rows."""
        return self.device_mesh[DATA_PARALLEL].size()

    @property
    def data_parallel_rank(self) -> int:
        return self.device_mesh[DATA_PARALLEL].get_local_rank()

    @property
    def sequence_group(self):
        """The process group sharing this rank's rows (None without sequence parallelism)."""
        return self.device_mesh[SEQUENCE_PARALLEL].get_group() if self.sequence_parallel_size > 1 else None

    def _shard_mesh(self):
        """FSDP shards over every rank: the ranks of a sequence group hold the same parameters and
        their gradients (from different slots of the same rows) must add up, which the reduce-scatter
        over all ranks does."""
        if self.sequence_parallel_size == 1:
            return self.device_mesh[DATA_PARALLEL]
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(self.root_device.type, (self.world_size,), mesh_dim_names=("shard",))

    # ------------------------------------------------------------------ the model
    def build_sharded(
        self,
        build: Callable[[], nn.Module],
        pretrained: str | None,
        prepare: Callable[[nn.Module], None] | None,
    ) -> nn.Module:
        """Build on meta, shard, allocate on this rank's device, then load or initialise weights."""
        bf16 = str(self.precision_plugin.precision).startswith("bf16")
        return build_sharded(
            build,
            self._shard_mesh(),
            self.root_device,
            pretrained,
            prepare,
            bf16=bf16,
            reshard_after_forward=self.reshard_after_forward,
            cpu_offload=self.cpu_offload,
        )

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        """Write the sharded checkpoint beside the target, then swap it in (rank 0, after all ranks wrote)."""
        path = Path(self.broadcast(str(filepath)))
        tmp = path.with_name(f".{path.name}.tmp")
        old = path.with_name(f".{path.name}.old")
        if self.global_rank == 0 and tmp.exists():
            shutil.rmtree(tmp)
        self.barrier()
        super().save_checkpoint(checkpoint, tmp, storage_options)
        self.barrier()
        if self.global_rank == 0:
            if path.exists():
                path.rename(old) if path.is_dir() else path.unlink()
            tmp.rename(path)
            if old.exists():
                shutil.rmtree(old)
        self.barrier()

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(checkpoint_path)
        old = path.with_name(f".{path.name}.old")
        if not path.exists() and old.exists():  # a save was killed between its two renames
            path = old
        return super().load_checkpoint(path, weights_only=weights_only)
