"""The text options shared by the command-line tools (``diagnose``, ``evaluate``): a corpus, its
tokenizer (by default the model's own, else the byte tokenizer) and the token that opens sequences."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from anchor_lightning.data.sources import open_source
from anchor_lightning.data.tokenizer import BYTES, Tokenizer, load_tokenizer
from anchor_lightning.errors import UserError


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="default:2000", help="a JSONL corpus (text or pre-tokenized), or default:N")
    parser.add_argument("--tokenizer", default=None, help="tokenizer directory or .gguf (default: the model's, else bytes)")
    parser.add_argument("--first-token", type=int, default=None, help="the anchor / BOS id (default: the tokenizer's BOS)")


def load_documents(source: str, tokenizer: Tokenizer) -> list[np.ndarray]:
    """Token ids of every document of ``source`` (text is encoded without an EOS)."""
    return open_source(source, tokenizer, append_eos=False).load().token_ids


def load_corpus(args: argparse.Namespace, model_dir: Path | None) -> tuple[Tokenizer, int, list[np.ndarray]]:
    """(tokenizer, first-token id, documents as token ids) from the parsed options."""
    has_tokenizer = model_dir is not None and any(Path(model_dir).glob("tokenizer*"))
    tokenizer = load_tokenizer(args.tokenizer or (str(model_dir) if has_tokenizer else BYTES))
    first_token = args.first_token if args.first_token is not None else tokenizer.bos_token_id
    if first_token is None:
        raise UserError("the tokenizer has no BOS: give --first-token", field="--first-token")
    return tokenizer, first_token, load_documents(args.data, tokenizer)

