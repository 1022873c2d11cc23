"""Long-context evaluation during training: needle accuracy and perplexity by position, to TensorBoard.

Runs at the end of validation every ``every_n_validations`` validations on rank 0 (a small grid: it
costs a few forward passes per trial). The model is evaluated with transformers' own attention and a
KV cache, one document at a time, the first token at position 0. For a model sharded with FSDP, export
a checkpoint and run ``python -m anchor_lightning evaluate`` instead (this callback then does nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from anchor_lightning.callbacks.parts import anchor_module, outside_training, packed_data
from anchor_lightning.eval.niah import TASKS
from anchor_lightning.eval.scoring import HFScorer
from anchor_lightning.eval.suite import Corpora, NeedleSettings, evaluate
from anchor_lightning.model.kernels import without_new_graphs


class LongContextEval(L.Callback):
    def __init__(
        self,
        lengths: Sequence[int] = (1024,),
        depths: Sequence[float] = (0.0, 0.5, 1.0),
        tasks: Sequence[str] = TASKS,
        trials: int = 2,
        candidates: int = 10,
        ppl_documents: int = 2,
        every_n_validations: int = 1,
    ) -> None:
        self.lengths, self.depths, self.tasks = list(lengths), list(depths), list(tasks)
        self.trials, self.candidates, self.ppl_documents = trials, candidates, ppl_documents
        self.every = every_n_validations
        self._validations = 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validations += 1
        if trainer.sanity_checking or self._validations % self.every or not trainer.is_global_zero:
            return
        if trainer.world_size > 1 and type(trainer.strategy).__name__ == "ShardedStrategy":
            rank_zero_warn("LongContextEval skips sharded models: export and run `python -m anchor_lightning evaluate`")
            return
        data = packed_data(trainer)
        if not data.val_rows:
            return
        rows = [data.val_rows.row(i) for i in range(len(data.val_rows))]
        documents = [r.input_ids[(r.doc_ids >= 0) & ~r.is_prefix].astype("int64") for r in rows]  # text only
        model = anchor_module(pl_module).packed.lm
        previous, was_training = model.config._attn_implementation, model.training
        model.set_attn_implementation("sdpa")
        model.eval()
        try:
            cuda = pl_module.device.type == "cuda"
            with (
                outside_training(trainer),
                without_new_graphs(),
                torch.autocast(pl_module.device.type, dtype=torch.bfloat16, enabled=cuda),
            ):
                results = evaluate(
                    HFScorer(model),
                    Corpora(documents),
                    lambda text: data.tokenizer.encode_batch([text])[0],
                    data.anchor_id,
                    NeedleSettings(
                        tuple(self.tasks),
                        tuple(self.lengths),
                        tuple(self.depths),
                        self.trials,
                        self.candidates,
                        self.ppl_documents,
                        progress=False,
                    ),
                )
        finally:
            model.set_attn_implementation(previous)
            model.train(was_training)
        metrics = {f"eval/niah_{task}": r["accuracy"] for task, r in results["niah"].items()}
        metrics.update(
            {f"eval/ppl_{b['start']}_{b['end']}": b["ppl"] for b in results.get("perplexity_by_position", [])}
        )
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
