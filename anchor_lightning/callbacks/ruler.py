"""RULER inside the training loop: every N optimizer steps and at the end, to TensorBoard.

The paper averages RULER over its last 5 checkpoints (every 10 steps over the last 50) because single
evaluations fluctuate; this callback does the same while the run trains, on a subset chosen to fit the
budget (tasks, lengths, samples), and logs

* ``ruler/<task>/<length>`` and ``ruler/avg/<length>`` (score 0-100) at each evaluation,
* ``ruler/avg_last<K>/<length>``: the mean of the last ``K`` evaluations' averages (the paper's protocol),
* ``ruler/seconds``: what the evaluation cost, also printed in the run's log,

and writes each evaluation's ``ruler.json`` (every sample's prediction) under the logger's directory
(``ruler/step-<N>.json``). Samples are built once (``anchor_lightning/eval/ruler/suite.py``, cached).

The model is evaluated as trained weights are, in place: transformers' own SDPA attention, greedy
generation with a KV cache, bf16 on a GPU, the data's first token opening every prompt. Under
FSDP every rank generates a share of the samples with its shard of the model (the layers gather their
weights as in training, so no rank holds the whole model) and the ranks decode in step; rank 0 gathers
the scores.

    trainer:
      callbacks:
        - class_path: anchor_lightning.callbacks.ruler.RulerEval
          init_args: {every_n_steps: 10, first_step: 60, tasks: [niah_single_2, niah_multikey_1, vt], lengths: [32768], samples: 50}
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from anchor_lightning.callbacks.parts import anchor_module, outside_training, packed_data
from anchor_lightning.messages import say
from anchor_lightning.model.kernels import without_new_graphs
from anchor_lightning.paths import atomic_directory, cache_dir


def hf_tokenizer_source(tokenizer) -> str:
    """Where ``AutoTokenizer`` finds the data's tokenizer: its name or path, or for the built-in byte
    tokenizer its equivalent Hugging Face files, written once into the cache whole or not at all
    (every rank may get here at once; one writer's folder is kept)."""
    source = getattr(tokenizer, "name_or_path", None)
    if source is not None:
        return source
    folder = cache_dir("ruler") / tokenizer.fingerprint
    if not (folder / "tokenizer.json").is_file():
        with atomic_directory(folder) as tmp:
            tokenizer.save_pretrained(tmp)
    return str(folder)


class RulerEval(L.Callback):
    """RULER every ``every_n_steps`` optimizer steps (0: only at the end) and at the end of training.

    Args:
        every_n_steps: evaluate after every this many optimizer steps.
        first_step: no evaluation before this step (the paper's protocol over 100 steps: every 10 from
            step 60, so that the last 5 evaluations are those of the last 50 steps).
        tasks: RULER task names or sets (``offline``, ``paper_offline`` ...).
        lengths: RULER lengths (prompt plus generation budget) in tokens.
        samples: samples per task and length.
        last_k: how many recent evaluations ``ruler/avg_last<K>/<length>`` averages (the paper: 5).
        at_end: also evaluate when training ends (unless the last step was just evaluated).
        batch_size: most prompts decoded together (the memory plan may take fewer).
        workers: processes that build the samples (default: every core).
        prefill_kernel: attention of the prompts' prefill on a GPU (``auto``: cuDNN's where it agrees
            with FlashAttention on the model's heads, else FlashAttention; ``flash``; ``cudnn``).
    """

    def __init__(
        self,
        every_n_steps: int = 10,
        first_step: int = 0,
        tasks: Sequence[str] = ("niah_single_2", "niah_multikey_1", "niah_multivalue", "vt"),
        lengths: Sequence[int] = (4096,),
        samples: int = 20,
        last_k: int = 5,
        at_end: bool = True,
        batch_size: int = 64,
        workers: int | None = None,
        template: str = "base",
        seed: int = 42,
        prefill_kernel: str = "auto",
    ) -> None:
        from anchor_lightning.eval.ruler.suite import RulerSettings

        if every_n_steps < 0 or last_k < 1 or batch_size < 1:
            raise ValueError("every_n_steps >= 0, last_k >= 1 and batch_size >= 1")
        self.settings = RulerSettings(
            tasks=list(tasks),
            lengths=list(lengths),
            samples=samples,
            seed=seed,
            template=template,
            prefill_kernel=prefill_kernel,
        )
        self.settings.check()
        self.every, self.first_step, self.last_k, self.at_end = every_n_steps, first_step, last_k, at_end
        self.batch_size, self.workers = batch_size, workers
        self.history: list[dict[str, float]] = []  # each evaluation's averages by length
        self._evaluated_step = -1
        self._samples: dict[tuple[str, int], list[Any]] | None = None
        self._tokenizer: Any = None
        self.data: dict = {}  # digests of what the samples were built from

    # ------------------------------------------------------------------ hooks
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        due = self.every and step >= max(1, self.first_step) and step % self.every == 0
        if due and step != self._evaluated_step:
            with outside_training(trainer):
                self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end and trainer.global_step != self._evaluated_step:
            self.evaluate(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"history": self.history, "evaluated_step": self._evaluated_step}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
        self._evaluated_step = state_dict.get("evaluated_step", -1)

    # ------------------------------------------------------------------ work
    def _prepare(self, trainer) -> None:
        """The tokenizer (the data's, as a Hugging Face tokenizer) and the samples, built once: rank 0
        builds and caches them, the other ranks then read the cache."""
        from transformers import AutoTokenizer

        from anchor_lightning.eval.ruler.suite import prepare_samples

        data = packed_data(trainer)
        source = hf_tokenizer_source(data.tokenizer)
        self.settings.first_token = data.anchor_id
        for rank_group in (True, False):
            if trainer.is_global_zero == rank_group:
                self._samples, self.data = prepare_samples(source, self.settings, self.workers, progress=False)
            trainer.strategy.barrier("ruler-samples")
        self._tokenizer = AutoTokenizer.from_pretrained(source)

    def _shard(self, trainer, device):
        from anchor_lightning.eval.ruler.suite import Shard

        world = trainer.world_size
        if world == 1 or not torch.distributed.is_initialized():
            return Shard()

        def reduce_min(value: int) -> int:
            t = torch.tensor([value], device=device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
            return int(t.item())

        def all_done(done: bool) -> bool:
            t = torch.tensor([int(done)], device=device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
            return bool(t.item())

        return Shard(trainer.global_rank, world, reduce_min, all_done)

    @torch.no_grad()
    def evaluate(self, trainer, pl_module) -> dict | None:
        from anchor_lightning.eval.generation import GenerationStats
        from anchor_lightning.eval.ruler import suite

        began = time.perf_counter()
        if self._samples is None:
            self._prepare(trainer)
        assert self._samples is not None
        model = anchor_module(pl_module).packed.lm
        device = pl_module.device
        previous, was_training = model.config._attn_implementation, model.training
        model.set_attn_implementation("sdpa")
        model.eval()
        stats = GenerationStats()
        bf16 = device.type == "cuda" and "bf16" in str(trainer.precision)
        try:
            with without_new_graphs(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                records = suite.generate_predictions(
                    model,
                    self._tokenizer,
                    self._samples,
                    self.settings,
                    stats,
                    progress=False,
                    shard=self._shard(trainer, device),
                    most=self.batch_size,
                )
        finally:
            model.set_attn_implementation(previous)
            model.train(was_training)
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, records)
            records = [r for part in gathered for r in part]
        self._evaluated_step = trainer.global_step
        seconds = time.perf_counter() - began
        if not trainer.is_global_zero:
            return None
        result = suite.results(
            records, self.settings, self.data, {"step": trainer.global_step, "generation": stats.as_json()}
        )
        self.history.append({length: row["average"]["score"] for length, row in result["scores"].items()})
        recent = self.history[-self.last_k :]
        metrics = {"ruler/seconds": seconds}
        for length, row in result["scores"].items():
            metrics[f"ruler/avg/{length}"] = row["average"]["score"]
            metrics[f"ruler/avg_last{self.last_k}/{length}"] = sum(h[length] for h in recent) / len(recent)
            for task, cell in row["tasks"].items():
                metrics[f"ruler/{task}/{length}"] = cell["score"]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self._write(trainer, result)
        averages = ", ".join(f"{int(n) // 1024}K {metrics[f'ruler/avg/{n}']:.1f}" for n in result["scores"])
        say(
            f"RULER at step {trainer.global_step}: {averages} (mean of the last {len(recent)}: "
            + ", ".join(f"{metrics[f'ruler/avg_last{self.last_k}/{n}']:.1f}" for n in result["scores"])
            + f"); {len(records)} samples in {seconds:.1f} s"
        )
        return result

    def _write(self, trainer, result: dict) -> None:
        from anchor_lightning.paths import atomic_write

        log_dir = next((lg.log_dir for lg in trainer.loggers if getattr(lg, "log_dir", None)), None)
        if log_dir is None:
            return
        folder = Path(log_dir) / "ruler"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"step-{trainer.global_step}.json", json.dumps(result, indent=1))
