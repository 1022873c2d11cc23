"""The LightningDataModule: documents -> packed rows (cached) -> batches of the batch contract."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from anchor_lightning.checkpoint.identity import check_same_run
from anchor_lightning.data import cache as row_cache
from anchor_lightning.data.batch import collate_rows
from anchor_lightning.data.packing import (
    MIN_SEQ_LEN,
    PackingSpec,
    PackStats,
    check_mode_layout,
    holdout_scores,
    iter_packed_rows,
    unknown_openings,
)
from anchor_lightning.data.sampler import EvalBatchSampler, RowRef, StepBatchSampler
from anchor_lightning.data.sources import DEFAULT_SOURCE, DocumentSource, first_line_with_token, open_source
from anchor_lightning.data.token_store import TokenStore, store_key, write_store
from anchor_lightning.data.tokenizer import Tokenizer, load_tokenizer, resolve_anchor_id
from anchor_lightning.errors import UserError
from anchor_lightning.paths import exclusive, writable_directory

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


class _PartTags:
    """The tag tokens of the documents of one part, by their position in that part (what the packer
    indexes), read from the store without a list per document."""

    def __init__(self, store: TokenStore, positions: np.ndarray | None, encoded: list[np.ndarray]) -> None:
        self.store, self.positions, self.encoded = store, positions, encoded

    def __getitem__(self, k: int) -> np.ndarray:
        index = self.positions[k] if self.positions is not None else k
        return self.encoded[self.store.tag_index[index]]


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
        check_mode_layout(mode, layout)
        if seq_len < MIN_SEQ_LEN:
            raise UserError(f"row length {seq_len} is too small (at least {MIN_SEQ_LEN} slots)", field="seq_len")
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"must be in [0, 1), got {val_fraction}", field="data.val_fraction")
        if interleave_pieces is not None and interleave_pieces < 1:
            raise UserError(f"must be at least 1, got {interleave_pieces}", field="data.interleave_pieces")
        if interleave_window is not None and interleave_window < 1:
            raise UserError(f"must be at least 1, got {interleave_window}", field="data.interleave_window")
        self.train_source, self.val_source, self.val_fraction = train, val, val_fraction
        self.format, self.text_field, self.append_eos, self.eos_id = format, text_field, append_eos, eos_id
        self.tag_field, self.interleave_pieces, self.interleave_window = tag_field, interleave_pieces, interleave_window
        self.tokenizer_name, self.anchor_id_config = tokenizer, anchor_id
        self.seq_len, self.mode, self.layout = seq_len, mode, layout
        for field, value, least in (
            ("data.micro_batch_size", micro_batch_size, 1),
            ("data.global_batch_size", global_batch_size, 1),
            ("data.num_workers", num_workers, 0),
            ("seq_len", seq_len, 2),
        ):
            if value is not None and value < least:
                raise UserError(f"{value} is below {least}", field=field)
        self.micro_batch_size, self.global_batch_size = micro_batch_size, global_batch_size
        self.seed, self.num_workers = seed, num_workers
        self.cache_dir = Path(cache_dir)
        self._tokenizer: Tokenizer | None = None
        self.train_rows: row_cache.PackedRows | None = None
        self.val_rows: row_cache.PackedRows | None = None
        self.train_sampler: StepBatchSampler | None = None
        self.max_token_id = -1
        self.identity: dict = {}  # which data and packing made the rows (set when they are built)

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
            eos_id=self.eos_id,
            tag_field=self.tag_field,
        )

    def _interleave(self) -> tuple | None:
        return (self.interleave_pieces, self.seed, self.interleave_window) if self.interleave_pieces else None

    def _pack(self, store: TokenStore, positions: np.ndarray | None, spec: PackingSpec, stats: PackStats):
        """Rows of the store's documents at ``positions`` (all when None), streamed."""
        documents = store.documents(positions)
        tags = None
        if store.tag_index is not None:
            encoded = [np.asarray(ids, dtype=np.int64) for ids in self.tokenizer.encode_batch(store.tag_names)]
            tags = _PartTags(store, positions, encoded)
        try:
            yield from iter_packed_rows(documents, spec, stats, tags, self._interleave())
        except ValueError as err:
            raise UserError(str(err), field="data.tag_field") from None

    def locate_token(self, at_least: int) -> tuple[str | None, int | None]:
        """(file, line) of the first pre-tokenized line holding an id >= ``at_least``, for error messages."""
        for source in (self.train_source, self.val_source):
            if source is None:
                continue
            found = first_line_with_token(Path(source), at_least)
            if found is not None:
                return source, found
        return (None, None)

    def _check_openings(self, store: TokenStore, description: str) -> None:
        """Refuse (a special token) or warn about pre-tokenized documents that mostly open with an id the
        packer neither strips nor uses as F: a BOS of another tokenizer, kept as content after F."""
        spec = self.packing_spec()
        openings, total = unknown_openings(store.first_tokens, spec), len(store)
        if not openings:
            return
        token, count = openings.most_common(1)[0]
        if count < max(2, total // 2):
            return
        message = (
            f"{count} of {total} documents of {description} open with token id {token}, which is neither the first "
            f"token F ({spec.first_token_id}) nor stripped ({', '.join(map(str, spec.strip_ids)) or 'nothing'}): "
            "it would stay as content right after F"
        )
        if token in self.tokenizer.special_ids:
            raise UserError(
                f"{message}; it is a special token of the tokenizer: was the data tokenized for this model? "
                "(data.anchor_id sets F; the tokenizer's BOS is stripped)",
                field="data.train",
            )
        warnings.warn(
            f"{message} (if it is a BOS of the tokenizer the data was made with, the data does not match "
            "data.tokenizer)",
            stacklevel=2,
        )

    def _store(self, source: DocumentSource) -> TokenStore:
        """The source's tokenized documents, from the cache or tokenized now (by one process at a time)."""
        directory = writable_directory(self.cache_dir, "data.cache_dir") / f"tokens-{store_key(source.fingerprint)}"
        with exclusive(
            directory.with_name(f".{directory.name}.lock"),
            f"waiting for another process tokenizing {source.description}",
        ):
            if (directory / "meta.json").is_file():
                return TokenStore(directory)
            return write_store(directory, source.documents(), source.description, source.size)

    def _cached(
        self, fingerprint: str, part: str, store: TokenStore, positions: np.ndarray | None
    ) -> row_cache.PackedRows:
        """The packed rows of the store's documents at ``positions`` under this spec, from the cache or
        packed now (by one process at a time)."""
        spec = self.packing_spec()
        parts = {"documents": fingerprint, "part": part, "spec": spec.__dict__, "interleave": self._interleave()}
        directory = writable_directory(self.cache_dir, "data.cache_dir") / row_cache.cache_key(parts)
        with exclusive(
            directory.with_name(f".{directory.name}.lock"), f"waiting for another process packing {part} rows"
        ):
            if (directory / "meta.json").is_file():
                return row_cache.load_rows(directory)
            stats = PackStats()
            rows = row_cache.write_rows(directory, self._pack(store, positions, spec, stats), stats, parts)
        log.info("packed %s rows of %s: %s", part, fingerprint, stats.as_dict())
        return rows

    def prepare_data(self) -> None:
        """Tokenize and pack once per node (local rank 0); :meth:`setup` then loads the cache."""
        self._build()

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows is None:
            self._build()

    def _validation_positions(self, count: int) -> np.ndarray:
        """Indices of the held-out documents: a hash below ``val_fraction`` (at least one document)."""
        scores = holdout_scores(np.arange(count))
        held = np.flatnonzero(scores < self.val_fraction)
        if len(held) == 0:
            held = np.asarray([int(np.argmin(scores))])
        if len(held) >= count:
            raise UserError("too few documents to hold out a validation share", field="data.val_fraction")
        return held

    def _build(self) -> None:
        train = self._source(self.train_source)
        store = self._store(train)
        if train.pretokenized:
            self._check_openings(store, train.description)
        held_out = self.val_source is None and self.val_fraction > 0
        split_key = f"{train.fingerprint}/holdout={f'hash:{self.val_fraction}' if held_out else 0}"
        val = self._source(self.val_source) if self.val_source is not None else None
        self.identity = {
            "train": split_key,
            "val": val.fingerprint if val is not None else None,
            "packing": dict(self.packing_spec().__dict__),
            "tags": self.tag_field,
            "interleave": list(self._interleave()) if self.interleave_pieces else None,
        }
        train_positions = val_positions = None
        if held_out:
            val_positions = self._validation_positions(len(store))
            keep = np.ones(len(store), dtype=bool)
            keep[val_positions] = False
            train_positions = np.flatnonzero(keep)
        self.train_rows = self._cached(split_key, "train", store, train_positions)
        if len(self.train_rows) == 0:
            raise UserError("the training data set packs into no rows (no document has content)", field="data.train")
        if val is not None:
            val_store = self._store(val)
            self.val_rows = self._cached(val.fingerprint, "val", val_store, None)
        elif held_out:
            self.val_rows = self._cached(split_key, "val", store, val_positions)
        self.max_token_id = max(
            rows.max_token_id for rows in (self.train_rows, self.val_rows) if rows is not None and len(rows)
        )

    # ------------------------------------------------------------------ loaders
    def _distributed(self) -> tuple[int, int, int]:
        """(ranks reading different rows, this rank's index among them, gradient accumulation). The
        ranks of a sequence-parallel group read the same rows."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0, 1
        strategy = trainer.strategy
        if getattr(strategy, "sequence_parallel_size", 1) > 1:
            return strategy.data_parallel_size, strategy.data_parallel_rank, trainer.accumulate_grad_batches
        return trainer.world_size, trainer.global_rank, trainer.accumulate_grad_batches

    def _loader(self, rows: row_cache.PackedRows, sampler) -> DataLoader:
        return DataLoader(
            RowDataset(rows),
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
        if self.global_batch_size is not None and self.train_sampler.rows_per_step != self.global_batch_size:
            raise UserError(
                f"{world} ranks x {self.micro_batch_size} rows x {accumulation} accumulation = "
                f"{self.train_sampler.rows_per_step} rows per step, not the configured {self.global_batch_size}",
                field="data.global_batch_size",
            )
        self._resume_position()
        return self._loader(self.train_rows, self.train_sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_rows is None or len(self.val_rows) == 0:
            return []
        world, rank, _ = self._distributed()
        return self._loader(self.val_rows, EvalBatchSampler(len(self.val_rows), self.micro_batch_size, world, rank))

    # ------------------------------------------------------------------ resuming
    def _layout_fingerprint(self) -> dict:
        return {"rows": len(self.train_rows), "rows_per_step": self.train_sampler.rows_per_step, "seed": self.seed}

    def state_dict(self) -> dict:
        """Saved in every checkpoint: what the data position depends on, and which data and packing made
        the rows (both checked on resume)."""
        if self.train_sampler is None:
            return {}
        return {**self._layout_fingerprint(), "identity": self.identity}

    def load_state_dict(self, state: dict) -> None:
        """Refuse other data or packing at once (the row position is checked when the loader is built)."""
        state = dict(state)
        check_same_run(state.pop("identity", None), self.identity, "data settings", "data")
        self._restored = state

    def _resume_position(self) -> None:
        """Place the sampler after the last trained micro-batch.

        Lightning restores ``global_step`` and ``current_epoch`` before it asks for the loader, and
        every epoch holds the same number of optimizer steps, so the position follows from them (the
        sampler's own counter runs ahead of training by the loader's prefetch)."""
        trainer, restored = self.trainer, getattr(self, "_restored", None)
        if trainer is None or not restored:
            return
        current = self._layout_fingerprint()
        if restored != current:
            raise UserError(
                f"the checkpoint was written with data {restored}, this run has {current}: resuming would "
                "repeat or skip rows (use the same data, batch layout and seed)",
                field="data",
            )
        done_in_epoch = trainer.global_step - trainer.current_epoch * self.train_sampler.steps_per_epoch
        self.train_sampler.resume_at(trainer.current_epoch, done_in_epoch * self.train_sampler.accumulation)
        self._restored = None
