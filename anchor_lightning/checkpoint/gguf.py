"""GGUF checkpoints (llama.cpp's format) as Hugging Face directories.

``--model.pretrained``, ``--model`` of ``evaluate``/``diagnose`` and ``data.tokenizer`` take a ``.gguf``
file as well as a Hugging Face directory. The file is converted once, by transformers' own GGUF
reader (which dequantizes to float), into a plain float32 safetensors directory with the tokenizer of
the same file, and every later use reads that directory:

* the directory lives in a cache outside the working tree: ``$ANCHOR_LIGHTNING_CACHE/gguf`` (default
  ``$XDG_CACHE_HOME/anchor_lightning/gguf``, else ``~/.cache/anchor_lightning/gguf``);
* it is named by the SHA-256 of the file's bytes, so weights are only ever read from a conversion of
  exactly the file the user named (another file, or the same path with new contents, converts anew);
* it is written under a temporary name and renamed, so a conversion killed half-way is never used.

Reading GGUF needs the optional ``gguf`` package (``pip install 'anchor-lightning[gguf]'``) and
``accelerate``; without them the command stops with one line saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from anchor_lightning.errors import UserError
from anchor_lightning.paths import atomic_directory, cache_dir, file_sha256

CONVERTER_VERSION = 1  # part of the cache key: a change of the conversion re-converts
SOURCE_FILE = "gguf_source.json"  # written beside the weights: which file they came from


def is_gguf(path: str | os.PathLike | None) -> bool:
    return path is not None and str(path).lower().endswith(".gguf")


def cache_root() -> Path:
    return cache_dir("gguf")


def _require_packages(path: Path, field: str) -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"{path}: reading a GGUF checkpoint needs {' and '.join(missing)} "
            "(pip install 'anchor-lightning[gguf]', or pip install gguf accelerate)",
            field=field,
        )


def check_whole(path: Path, field: str) -> None:
    """Refuse, in one line, a file whose GGUF header or tensors are cut short (an interrupted download or
    copy), before any conversion: transformers would fail deep inside with a reshape or unpack error."""
    import struct

    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (struct.error, ValueError, IndexError, KeyError, OSError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"cannot convert this GGUF file: not a whole GGUF file (truncated or broken: {first})",
            file=str(path),
            field=field,
        ) from None
    need = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    size = path.stat().st_size
    if size < need:
        raise UserError(
            f"cannot convert this GGUF file: truncated (its tensors need {need:,} bytes, the file has {size:,}: an "
            "interrupted download or copy?)",
            file=str(path),
            field=field,
        )


def convert(path: Path, target: Path) -> None:
    """Write ``path``'s model (float32 safetensors, config without quantization) and tokenizer to
    ``target``. transformers refuses to save a model loaded from GGUF (it counts as quantized), so the
    dequantized weights go into a fresh model built from the same config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = str(path)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(target)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(target)


def local_checkpoint(path: str | os.PathLike, field: str = "model.pretrained") -> str:
    """The Hugging Face directory for ``path``: ``path`` itself unless it is a ``.gguf`` file, which is
    converted into the cache on first use."""
    if not is_gguf(path):
        return str(path)
    source = Path(path)
    if not source.is_file():
        raise UserError("no such GGUF file", file=str(source), field=field)
    digest = file_sha256(source)
    target = cache_root() / f"{digest[:24]}-v{CONVERTER_VERSION}"
    if (target / SOURCE_FILE).is_file():
        return str(target)
    _require_packages(source, field)
    check_whole(source, field)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create the GGUF conversion cache ({err.strerror}); set ANCHOR_LIGHTNING_CACHE",
            file=str(target.parent),
        ) from None
    with atomic_directory(target) as tmp:
        try:
            convert(source, tmp)
        except (ValueError, KeyError, OSError, RuntimeError) as err:
            raise UserError(
                f"cannot convert this GGUF file: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                file=str(source),
                field=field,
            ) from None
        (tmp / SOURCE_FILE).write_text(
            json.dumps({"file": str(source.resolve()), "sha256": digest, "converter": CONVERTER_VERSION}, indent=1)
        )
    return str(target)
