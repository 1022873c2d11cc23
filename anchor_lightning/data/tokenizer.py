"""Tokenizers: a Hugging Face tokenizer from a local directory or hub name, or the built-in byte
tokenizer used by the embedded default (no download, identical on every machine)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np

from anchor_lightning.checkpoint.gguf import is_gguf, local_checkpoint
from anchor_lightning.errors import UserError


class Tokenizer(Protocol):
    @property
    def bos_token_id(self) -> int | None: ...

    @property
    def eos_token_id(self) -> int | None: ...

    def __len__(self) -> int: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: list[int]) -> str: ...

    def save_pretrained(self, directory) -> None: ...

    @property
    def special_ids(self) -> frozenset[int]: ...

    @property
    def fingerprint(self) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255, then BOS = 256 and EOS = 257."""

    bos_token_id = 256
    eos_token_id = 257

    def __len__(self) -> int:
        return 258

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def encode_arrays(self, texts: list[str]) -> list[np.ndarray]:
        """The same ids as arrays, without a Python int per byte (the streamed preparation's path)."""
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids: list[int]) -> str:
        """Bytes as UTF-8 text, ``<s>``/``</s>`` for BOS/EOS, ``<id N>`` for an id outside the vocabulary."""
        special = {self.bos_token_id: "<s>", self.eos_token_id: "</s>"}
        out, run = [], bytearray()
        for i in ids:
            if i in special or not 0 <= i < 256:
                out.append(run.decode("utf-8", errors="replace") + special.get(i, f"<id {i}>"))
                run = bytearray()
            else:
                run.append(i)
        return "".join(out) + run.decode("utf-8", errors="replace")

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset((self.bos_token_id, self.eos_token_id))

    def save_pretrained(self, directory) -> None:
        """Write the same tokenizer as Hugging Face files (bytes 0-255, ``<s>`` 256, ``</s>`` 257), so an
        exported model is usable on text with ``AutoTokenizer`` alone: a byte-level BPE with no merges,
        the byte alphabet of byte-level BPE tokenizers (GPT-2's) spelling each byte."""
        from tokenizers import Tokenizer as Core
        from tokenizers import decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        spelling = bytes_to_unicode()
        core = Core(models.BPE(vocab={spelling[b]: b for b in range(256)}, merges=[]))
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        core.decoder = decoders.ByteLevel()
        core.add_special_tokens(["<s>", "</s>"])  # ids 256 and 257, after the bytes
        PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>").save_pretrained(directory)

    @property
    def fingerprint(self) -> str:
        return "byte-tokenizer-v1"


class HFTokenizer:
    """A ``transformers`` tokenizer; texts are encoded without special tokens (the packer adds F)."""

    def __init__(self, name_or_path: str):
        from transformers import AutoTokenizer

        self.name_or_path = name_or_path
        try:
            self.tok = AutoTokenizer.from_pretrained(name_or_path)
        except (OSError, ValueError) as err:
            raise UserError(
                f"cannot load a tokenizer from {name_or_path!r}: {' '.join(str(err).split())}", field="data.tokenizer"
            ) from None
        self.bos_token_id = self.tok.bos_token_id
        self.eos_token_id = self.tok.eos_token_id

    def __len__(self) -> int:
        return len(self.tok)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # split_special_tokens: text that merely looks like a special token ("<unk>", "</s>") is text
        return self.tok(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids))

    def save_pretrained(self, directory) -> None:
        self.tok.save_pretrained(directory)

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(self.tok.all_special_ids)

    @property
    def fingerprint(self) -> str:
        path = Path(self.name_or_path)
        digest = hashlib.sha256(type(self.tok).__name__.encode())
        if path.is_dir():
            for f in sorted(p for p in path.iterdir() if p.is_file() and _is_tokenizer_file(p.name)):
                digest.update(f.name.encode())
                digest.update(f.read_bytes())
        else:
            digest.update(self.name_or_path.encode())
        return digest.hexdigest()[:16]


def _is_tokenizer_file(name: str) -> bool:
    return any(part in name for part in ("token", "vocab", "merges")) or name.endswith(".model")


BYTES = "bytes"  # the name of the built-in byte tokenizer


def load_tokenizer(name_or_path: str | None) -> Tokenizer:
    """A tokenizer directory / hub name, a ``.gguf`` checkpoint's tokenizer, or the built-in byte tokenizer
    (``bytes`` or None)."""
    if name_or_path is None or name_or_path == BYTES:
        return ByteTokenizer()
    if is_gguf(name_or_path):  # the tokenizer stored in a GGUF checkpoint, from its cached conversion
        name_or_path = local_checkpoint(name_or_path, field="data.tokenizer")
    if Path(name_or_path).exists() and not Path(name_or_path).is_dir():
        raise UserError(
            f"{name_or_path}: a tokenizer is a directory (tokenizer.json or tokenizer.model)", field="data.tokenizer"
        )
    return HFTokenizer(name_or_path)


def resolve_anchor_id(tokenizer: Tokenizer, anchor_id: int | None, vocab_size: int) -> int:
    """The first-token id: the configured one, else the tokenizer's BOS."""
    if anchor_id is None:
        anchor_id = tokenizer.bos_token_id
        if anchor_id is None:
            raise UserError(
                "the tokenizer has no BOS token: set data.anchor_id (for Qwen, the id of <|endoftext|>)",
                field="data.anchor_id",
            )
    if not 0 <= anchor_id < vocab_size:
        raise UserError(f"anchor id {anchor_id} is outside the vocabulary (size {vocab_size})", field="data.anchor_id")
    return int(anchor_id)
