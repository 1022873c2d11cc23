"""The text the inference-side tools read (``diagnose``, ``evaluate``): a corpus, its tokenizer (by
default the model's own, else the byte tokenizer) and the token that opens sequences."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anchor_lightning.data.sources import open_source
from anchor_lightning.data.tokenizer import BYTES, Tokenizer, load_tokenizer
from anchor_lightning.errors import UserError


def load_documents(source: str, tokenizer: Tokenizer) -> list[np.ndarray]:
    """Token ids of every document of ``source`` (text is encoded without an EOS)."""
    return open_source(source, tokenizer, append_eos=False).load().token_ids


def corpus_tokenizer(tokenizer: str | None, model_dir: Path | None) -> Tokenizer:
    """``tokenizer`` if given, else the model directory's own tokenizer, else the byte tokenizer."""
    has_tokenizer = model_dir is not None and any(Path(model_dir).glob("tokenizer*"))
    return load_tokenizer(tokenizer or (str(model_dir) if has_tokenizer else BYTES))


def first_token_of(tokenizer: Tokenizer, first_token: int | None) -> int:
    """The id that opens every sequence: the one given, else the tokenizer's BOS."""
    if first_token is None:
        first_token = tokenizer.bos_token_id
    if first_token is None:
        raise UserError("the tokenizer has no BOS: give --first_token", field="--first_token")
    if not 0 <= first_token < len(tokenizer):
        raise UserError(
            f"{first_token} is outside the tokenizer's vocabulary ({len(tokenizer)})", field="--first_token"
        )
    return int(first_token)
