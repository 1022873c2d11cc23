"""What ``fit`` refuses before it builds any weights: a precision this module cannot train in, data the
model cannot embed (a larger tokenizer, a token id past the embedding, named by file and line), rows or
heads that cannot be split over the sequence-parallel ranks, data packed for another mode, layout
or row length than the model expects, and a backend that cannot train on the run's device."""

from __future__ import annotations

from anchor_lightning.errors import UserError
from anchor_lightning.parallel.strategy import ShardedStrategy


def check_run_fits(trainer, config, packing: tuple[str, str, int]) -> None:
    """``packing`` is the model's (mode, layout, seq_len); ``config`` its Hugging Face config."""
    if str(trainer.precision).startswith("16"):
        raise UserError(
            "fp16 needs loss scaling, which this module does not do: use bf16-mixed", field="trainer.precision"
        )
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None:
        return
    model_vocab = config.vocab_size
    tokenizer_vocab = len(datamodule.tokenizer)
    if tokenizer_vocab > model_vocab:
        raise UserError(
            f"the tokenizer's vocabulary ({tokenizer_vocab}) is larger than the model's embedding ({model_vocab})",
            field="data.tokenizer / model.config.vocab_size",
        )
    if datamodule.max_token_id >= model_vocab:
        file, line = datamodule.locate_token(model_vocab)
        raise UserError(
            f"the data holds token id {datamodule.max_token_id}, outside the model's embedding ({model_vocab})",
            file=file,
            line=line,
            field="data.train" if file is None else "input_ids",
        )
    strategy = trainer.strategy
    sequence_ranks = strategy.sequence_parallel_size if isinstance(strategy, ShardedStrategy) else 1
    mode, layout, seq_len = packing
    if sequence_ranks > 1:
        heads = config.num_attention_heads
        for what, size in (("the row length", seq_len), (f"the {heads} attention heads", heads)):
            if size % sequence_ranks:
                raise UserError(
                    f"{what} cannot be split over {sequence_ranks} sequence-parallel ranks",
                    field="trainer.strategy.init_args.sequence_parallel_size",
                )
    if (datamodule.mode, datamodule.layout, datamodule.seq_len) != packing:
        raise UserError(
            f"data packs (mode={datamodule.mode}, layout={datamodule.layout}, seq_len={datamodule.seq_len}) but the "
            f"model expects (mode={mode}, layout={layout}, seq_len={seq_len})",
            field="data",
        )


def check_backend_trains_here(backend: str, stage: str, device_type: str) -> None:
    """torch's ``flex_attention`` has no backward pass on the CPU: training with the flex backend there
    stops before the model is built (validation, forward only, runs)."""
    if backend == "flex" and stage == "fit" and device_type != "cuda":
        raise UserError(
            f"the flex backend trains only on CUDA (torch's flex_attention has no backward on {device_type}): "
            "use backend sdpa here",
            field="model.backend",
        )
