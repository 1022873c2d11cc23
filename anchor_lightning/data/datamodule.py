"""The LightningDataModule: documents -> packed rows (cached) -> batches of the batch contract."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from anchor_lightning.data import cache as row_cache
from anchor_lightning.data.batch import collate_rows
from anchor_lightning.data.packing import MIN_SEQ_LEN, PackingSpec, PackStats, check_mode_layout, iter_packed_rows
from anchor_lightning.data.sampler import EvalBatchSampler, RowRef, StepBatchSampler
from anchor_lightning.data.sources import DEFAULT_SOURCE, DocumentSource, open_source
from anchor_lightning.data.tokenizer import Tokenizer, load_tokenizer, resolve_anchor_id
from anchor_lightning.errors import UserError

log = logging.getLogger(__name__)


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
        train: training documents: ``default`` (the embedded generated corpus), a JSONL file of
            ``{"text": ...}`` or of pre-tokenized ``{"input_ids": [...], "source": [...]}``, a saved
            ``datasets`` directory, or a hub name (when online).
        val: validation documents, same forms as ``train``; None holds out ``val_fraction`` of them.
        val_fraction: share of the training documents (the last ones) held out for validation when
            ``val`` is None; 0 disables validation.
        format: ``auto`` (from the file), ``text``, ``tokenized`` or ``datasets``.
        text_field: the JSON / column field holding the text.
        tokenizer: a tokenizer directory or hub name; None uses the built-in byte tokenizer.
        anchor_id: the first-token id F; None uses the tokenizer's BOS (required when it has none).
        append_eos: end every tokenized text document with the tokenizer's EOS.
        seq_len: slots per row (linked from the top-level ``seq_len``).
        mode, layout: how rows are packed (linked from ``model.attention``).
        micro_batch_size: rows per micro-batch on each device.
        seed: shuffling seed (the order also depends on the epoch).
        num_workers: data-loader worker processes.
        tokenize_workers: processes for ``datasets.map`` tokenization of large inputs.
        cache_dir: where packed rows are cached.
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
        seq_len: int = 512,
        mode: str = "anchor",
        layout: str = "shared",
        micro_batch_size: int = 1,
        seed: int = 0,
        num_workers: int = 0,
        tokenize_workers: int = 4,
        cache_dir: str = ".cache/anchor_lightning",
    ):
        super().__init__()
        # layout is the model's choice (linked here, resolved from its backend): the model logs it
        self.save_hyperparameters(ignore=["layout"])
        check_mode_layout(mode, layout)
        if seq_len < MIN_SEQ_LEN:
            raise UserError(f"row length {seq_len} is too small (at least {MIN_SEQ_LEN} slots)", field="seq_len")
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"must be in [0, 1), got {val_fraction}", field="data.val_fraction")
        self.train_source, self.val_source, self.val_fraction = train, val, val_fraction
        self.format, self.text_field, self.append_eos = format, text_field, append_eos
        self.tokenizer_name, self.anchor_id_config = tokenizer, anchor_id
        self.seq_len, self.mode, self.layout = seq_len, mode, layout
        self.micro_batch_size, self.seed, self.num_workers = micro_batch_size, seed, num_workers
        self.tokenize_workers, self.cache_dir = tokenize_workers, Path(cache_dir)
        self._tokenizer: Tokenizer | None = None
        self.train_rows: row_cache.PackedRows | None = None
        self.val_rows: row_cache.PackedRows | None = None
        self.train_sampler: StepBatchSampler | None = None

    # ------------------------------------------------------------------ tokenizer and packing
    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    @property
    def anchor_id(self) -> int:
        return resolve_anchor_id(self.tokenizer, self.anchor_id_config, len(self.tokenizer))

    def packing_spec(self) -> PackingSpec:
        strip = {self.anchor_id, self.tokenizer.bos_token_id} - {None}
        return PackingSpec(self.seq_len, self.layout, self.anchor_id, tuple(sorted(strip)))

    def _source(self, source: str) -> DocumentSource:
        return open_source(
            source,
            self.tokenizer,
            data_format=self.format,
            text_field=self.text_field,
            append_eos=self.append_eos,
            num_proc=self.tokenize_workers,
        )

    def _cached(self, fingerprint: str, part: str, documents) -> row_cache.PackedRows:
        """The packed rows of ``documents()`` under this spec, from the cache or packed now."""
        spec = self.packing_spec()
        parts = {"documents": fingerprint, "part": part, "spec": spec.__dict__}
        directory = self.cache_dir / row_cache.cache_key(parts)
        if (directory / "meta.json").is_file():
            return row_cache.load_rows(directory)
        stats = PackStats()
        rows = row_cache.write_rows(directory, iter_packed_rows(documents(), spec, stats), stats, parts)
        log.info("packed %s rows of %s: %s", part, fingerprint, stats.as_dict())
        return rows

    def prepare_data(self) -> None:
        """Tokenize and pack once per node (local rank 0); :meth:`setup` then loads the cache."""
        self._build()

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows is None:
            self._build()

    def _build(self) -> None:
        train = self._source(self.train_source)
        loaded: dict[str, list[np.ndarray]] = {}

        def train_documents() -> list[np.ndarray]:
            if "train" not in loaded:
                loaded["train"] = train.load()
                if not loaded["train"]:
                    raise UserError("the data set is empty", field="data.train")
            return loaded["train"]

        held_out = self.val_source is None and self.val_fraction > 0

        def split(part: str) -> list[np.ndarray]:
            docs = train_documents()
            if not held_out:
                return docs
            held = max(1, math.floor(len(docs) * self.val_fraction))
            if held >= len(docs):
                raise UserError("too few documents to hold out a validation share", field="data.val_fraction")
            return docs[-held:] if part == "val" else docs[:-held]

        split_key = f"{train.fingerprint}/holdout={self.val_fraction if held_out else 0}"
        self.train_rows = self._cached(split_key, "train", lambda: split("train"))
        if len(self.train_rows) == 0:
            raise UserError("the training data set packs into no rows (no document has content)", field="data.train")
        if self.val_source is not None:
            val = self._source(self.val_source)
            self.val_rows = self._cached(val.fingerprint, "val", val.load)
        elif held_out:
            self.val_rows = self._cached(split_key, "val", lambda: split("val"))
        self.max_token_id = max(
            rows.max_token_id for rows in (self.train_rows, self.val_rows) if rows is not None and len(rows)
        )

    # ------------------------------------------------------------------ loaders
    def _distributed(self) -> tuple[int, int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0, 1
        return trainer.world_size, trainer.global_rank, trainer.accumulate_grad_batches

    def _loader(self, sampler) -> DataLoader:
        return DataLoader(
            RowDataset(self.train_rows if isinstance(sampler, StepBatchSampler) else self.val_rows),
            batch_sampler=sampler,
            collate_fn=Collator(self.mode, self.layout),
            num_workers=self.num_workers,
            pin_memory=self.trainer is not None and self.trainer.strategy.root_device.type == "cuda",
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        world, rank, accumulation = self._distributed()
        try:
            self.train_sampler = StepBatchSampler(
                self.train_rows.targets,
                self.train_rows.tokens,
                self.micro_batch_size,
                accumulation,
                world,
                rank,
                self.seed,
            )
        except ValueError as err:
            raise UserError(str(err), field="data.train") from None
        return self._loader(self.train_sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_rows is None or len(self.val_rows) == 0:
            return []
        world, rank, _ = self._distributed()
        return self._loader(EvalBatchSampler(len(self.val_rows), self.micro_batch_size, world, rank))
