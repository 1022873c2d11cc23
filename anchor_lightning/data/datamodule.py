"""The LightningDataModule: the run's data settings, the rows from the pipeline (``pipeline.py``:
source -> token store -> split -> rows, cached), loaders of the batch contract, and the resume position."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from anchor_lightning.checkpoint.identity import check_same_run
from anchor_lightning.data import cache as row_cache
from anchor_lightning.data import pipeline
from anchor_lightning.data.batch import collate_rows
from anchor_lightning.data.packing import PackingSpec
from anchor_lightning.data.sampler import EvalBatchSampler, RowRef, StepBatchSampler
from anchor_lightning.data.sources import DEFAULT_SOURCE
from anchor_lightning.data.tokenizer import Tokenizer, load_tokenizer, resolve_anchor_id
from anchor_lightning.errors import UserError, require_at_least
from anchor_lightning.parallel.strategy import ShardedStrategy


class RowDataset(Dataset):
    """Indexed by :class:`RowRef`; returns the reference with its row."""

    def __init__(self, rows: row_cache.PackedRows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, ref: RowRef):
        return ref, self.rows.row(ref.index)


class Collator:
    """Picklable collate function: (ref, row) pairs -> a batch dict."""

    def __init__(self, mode: str, layout: str):
        self.mode, self.layout = mode, layout

    def __call__(self, items):
        refs = [ref for ref, _ in items]
        step_targets = refs[0].step_targets or None
        step_tokens = refs[0].step_tokens or None
        return collate_rows(
            [row for _, row in items], self.mode, self.layout, [r.index for r in refs], step_targets, step_tokens
        )


class PackedDataModule(L.LightningDataModule):
    """Packed multi-document rows for continued pre-training.

    Args:
        train: training documents: ``default`` (the embedded generated corpus; ``default:N`` for N
            documents instead of 400), a JSONL file of
            ``{"text": ...}`` or of pre-tokenized ``{"input_ids": [...], "source": [...]}``, a saved
            ``datasets`` directory, or a hub name (when online).
        val: validation documents, same forms as ``train``; None holds out ``val_fraction`` of them.
        val_fraction: share of the training documents held out for validation when ``val`` is None
            (chosen by a hash of each document's index: no pass over the corpus, the same everywhere;
            at least one document); 0 disables validation.
        format: ``auto`` (from the file), ``text``, ``tokenized`` or ``datasets``.
        text_field: the JSON / column field holding the text.
        tokenizer: a tokenizer directory or hub name, or ``bytes`` for the built-in byte tokenizer;
            None: the directory of ``model.pretrained`` when set (from the CLI), else ``bytes``.
        anchor_id: the first-token id F; None uses the tokenizer's BOS (required when it has none).
        append_eos: end every tokenized text document with an EOS.
        eos_id: the id that ends text documents; None: the tokenizer's EOS. (A chat model's EOS, such as
            ``<|im_end|>``, is not what separated documents in its pre-training.)
        tag_field: the paper's +Tag variant: the field naming each document's domain (``domain`` in
            the pre-tokenized ``source`` entries, or a JSON field / column); its tokens open every
            packed document and are excluded from the loss. None: no tags.
        interleave_pieces: the paper's interleaved-chunks variant: cut each document into 1 to this
            many pieces at random points and shuffle the pieces (order kept within a document).
        interleave_window: documents whose pieces are shuffled together; memory holds the pieces of
            one window (8 bytes a token: 10,000 documents of 1,500 tokens are 120 MB); None: the
            whole corpus at once (what fits in memory).
        seq_len: slots per row (linked from the top-level ``seq_len``).
        mode, layout: how rows are packed (linked from the model).
        micro_batch_size: rows per micro-batch on each device.
        global_batch_size: rows per optimizer step over all devices; the CLI derives gradient
            accumulation from it. None: whatever micro-batch x devices x accumulation gives.
        seed: shuffling seed (the order also depends on the epoch).
        num_workers: data-loader worker processes.
        cache_dir: where the tokenized documents and the packed rows are cached (``anchor-lightning
            prepare`` fills it ahead of training; one process prepares an entry, the others wait).
    """

    def __init__(
        self,
        train: str = DEFAULT_SOURCE,
        val: str | None = None,
        val_fraction: float = 0.05,
        format: str = "auto",
        text_field: str = "text",
        tokenizer: str | None = None,
        anchor_id: int | None = None,
        append_eos: bool = True,
        eos_id: int | None = None,
        tag_field: str | None = None,
        interleave_pieces: int | None = None,
        interleave_window: int | None = 10_000,
        seq_len: int = 512,
        mode: str = "anchor",
        layout: str = "shared",
        micro_batch_size: int = 1,
        global_batch_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str = ".cache/anchor_lightning",
    ):
        super().__init__()
        # layout is the model's choice (linked here, resolved from its backend): the model logs it
        self.save_hyperparameters(ignore=["layout"], logger=False)  # the module logs the run's summary
        self.settings = pipeline.DataSettings(
            train=train,
            val=val,
            val_fraction=val_fraction,
            format=format,
            text_field=text_field,
            tokenizer=tokenizer,
            anchor_id=anchor_id,
            append_eos=append_eos,
            eos_id=eos_id,
            tag_field=tag_field,
            interleave_pieces=interleave_pieces,
            interleave_window=interleave_window,
            seq_len=seq_len,
            mode=mode,
            layout=layout,
            seed=seed,
            cache_dir=cache_dir,
        )
        self.settings.check()
        require_at_least(
            ("data.micro_batch_size", micro_batch_size, 1),
            ("data.global_batch_size", global_batch_size, 1),
            ("data.num_workers", num_workers, 0),
        )
        self.micro_batch_size, self.global_batch_size = micro_batch_size, global_batch_size
        self.num_workers = num_workers
        self._tokenizer: Tokenizer | None = None
        self.prepared: pipeline.PreparedData | None = None
        self.train_sampler: StepBatchSampler | None = None
        self._restored: dict | None = None  # the data position a checkpoint holds, checked by the next loader

    # ------------------------------------------------------------------ settings and rows
    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def layout(self) -> str:
        return self.settings.layout

    @property
    def seq_len(self) -> int:
        return self.settings.seq_len

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.settings.tokenizer)
        return self._tokenizer

    @property
    def anchor_id(self) -> int:
        return resolve_anchor_id(self.tokenizer, self.settings.anchor_id, len(self.tokenizer))

    def packing_spec(self) -> PackingSpec:
        return pipeline.packing_spec(self.settings, self.tokenizer)

    @property
    def train_rows(self) -> row_cache.PackedRows | None:
        return self.prepared.train if self.prepared is not None else None

    @property
    def val_rows(self) -> row_cache.PackedRows | None:
        return self.prepared.val if self.prepared is not None else None

    @property
    def identity(self) -> dict:
        """Which data and packing made the rows (empty until they are built)."""
        return self.prepared.identity if self.prepared is not None else {}

    @property
    def max_token_id(self) -> int:
        return self.prepared.max_token_id if self.prepared is not None else -1

    def locate_token(self, at_least: int) -> tuple[str | None, int | None]:
        """(file, line) of the first pre-tokenized line holding an id >= ``at_least``, for error messages."""
        return pipeline.locate_token(self.settings, at_least)

    def prepare_data(self) -> None:
        """Tokenize and pack once per node (local rank 0); :meth:`setup` then loads the cache."""
        self.prepared = pipeline.prepare_rows(self.settings, self.tokenizer)

    def setup(self, stage: str | None = None) -> None:
        if self.prepared is None:
            self.prepared = pipeline.prepare_rows(self.settings, self.tokenizer)

    # ------------------------------------------------------------------ loaders
    def _distributed(self) -> tuple[int, int, int]:
        """(ranks reading different rows, this rank's index among them, gradient accumulation). The
        ranks of a sequence-parallel group read the same rows."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0, 1
        strategy = trainer.strategy
        if isinstance(strategy, ShardedStrategy) and strategy.sequence_parallel_size > 1:
            return strategy.data_parallel_size, strategy.data_parallel_rank, trainer.accumulate_grad_batches
        return trainer.world_size, trainer.global_rank, trainer.accumulate_grad_batches

    def _loader(self, rows: row_cache.PackedRows, sampler) -> DataLoader:
        """Rows in worker processes, not pinned: a batch is a few MB of token ids, and the pinning
        thread calls ``torch.set_num_threads(1)``, which the CUDA autograd thread then starts with.
        Its thread count then differs from the main thread's, a state every compiled region guards
        on, so the regions recompiled when activation checkpointing recomputed them in the backward
        pass; past the recompile limit one ran eagerly there after running compiled in the forward,
        and the checkpoint stopped with "a different number of tensors was saved" (FP8 layers)."""
        return DataLoader(
            RowDataset(rows),
            batch_sampler=sampler,
            collate_fn=Collator(self.mode, self.layout),
            num_workers=self.num_workers,
            pin_memory=False,
            persistent_workers=self.num_workers > 0,
        )

    def _rows(self) -> pipeline.PreparedData:
        if self.prepared is None:
            raise RuntimeError("the rows are not built yet: Lightning calls prepare_data/setup before the loaders")
        return self.prepared

    def train_dataloader(self) -> DataLoader:
        world, rank, accumulation = self._distributed()
        rows = self._rows().train
        try:
            sampler = StepBatchSampler(
                rows.targets, rows.tokens, self.micro_batch_size, accumulation, world, rank, self.seed
            )
        except ValueError as err:
            raise UserError(str(err), field="data.train") from None
        self.train_sampler = sampler
        if self.global_batch_size is not None and sampler.rows_per_step != self.global_batch_size:
            raise UserError(
                f"{world} ranks x {self.micro_batch_size} rows x {accumulation} accumulation = "
                f"{sampler.rows_per_step} rows per step, not the configured {self.global_batch_size}",
                field="data.global_batch_size",
            )
        self._resume_position(sampler)
        return self._loader(rows, sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_rows is None or len(self.val_rows) == 0:
            return []
        world, rank, _ = self._distributed()
        return self._loader(self.val_rows, EvalBatchSampler(len(self.val_rows), self.micro_batch_size, world, rank))

    # ------------------------------------------------------------------ resuming
    def _layout_fingerprint(self, sampler: StepBatchSampler) -> dict:
        return {"rows": len(self._rows().train), "rows_per_step": sampler.rows_per_step, "seed": self.seed}

    def state_dict(self) -> dict:
        """Saved in every checkpoint: what the data position depends on, and which data and packing made
        the rows (both checked on resume)."""
        if self.train_sampler is None:
            return {}
        return {**self._layout_fingerprint(self.train_sampler), "identity": self.identity}

    def load_state_dict(self, state: dict) -> None:
        """Refuse other data or packing at once (the row position is checked when the loader is built)."""
        state = dict(state)
        check_same_run(state.pop("identity", None), self.identity, "data settings", "data")
        self._restored = state

    def _resume_position(self, sampler: StepBatchSampler) -> None:
        """Place the sampler after the last trained micro-batch.

        Lightning restores ``global_step`` and ``current_epoch`` before it asks for the loader, and
        every epoch holds the same number of optimizer steps, so the position follows from them (the
        sampler's own counter runs ahead of training by the loader's prefetch)."""
        trainer, restored = self.trainer, self._restored
        if trainer is None or not restored:
            return
        current = self._layout_fingerprint(sampler)
        if restored != current:
            raise UserError(
                f"the checkpoint was written with data {restored}, this run has {current}: resuming would "
                "repeat or skip rows (use the same data, batch layout and seed)",
                field="data",
            )
        done_in_epoch = trainer.global_step - trainer.current_epoch * sampler.steps_per_epoch
        sampler.resume_at(trainer.current_epoch, done_in_epoch * sampler.accumulation)
        self._restored = None
