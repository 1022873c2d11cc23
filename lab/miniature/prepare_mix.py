"""The miniature's second training set: short documents like the paper's SlimPajama, with some long ones.

    python lab/miniature/prepare_mix.py --short shortdocs.jsonl --split data/miniature \
        --tokenizer SmolLM2-135M-Instruct.Q4_1.gguf --out data/miniature-mix

The paper trained on SlimPajama: mostly web text, whose tokens lie mostly in documents of a few hundred
to a few thousand tokens (a 32K-64K row holds dozens of documents), with a small share of long ones
(books, papers, code). The first miniature trained on long documents only (a 32K row crossed few
document boundaries, so anchor and full attention differed little). This mix takes every document of
``--short`` (27K real short documents, median about 600 tokens) but a ``--val-fraction`` held out for
val/loss, and adds long training documents of ``--split`` (``prepare_data.py``'s ``train.jsonl``; its
evaluation documents are never used) of at least ``--long-min`` tokens, drawn in a seeded order until
they make ``--long-share`` of the mix's tokens. The documents are shuffled together (seeded).

Writes to ``--out``: ``train.jsonl`` and ``val.jsonl`` (``{"text", "domain"}``), and ``manifest.json``:
the settings, the inputs' digests, documents and tokens per part and source, and the share of tokens
by document length (under 256, 256-1K, 1K-4K, 4K-16K, 16K and over) for the mix and each source.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from anchor_lightning.data.tokenizer import load_tokenizer  # noqa: E402
from anchor_lightning.paths import atomic_write, file_sha256  # noqa: E402

BUCKETS = ((0, 256), (256, 1024), (1024, 4096), (4096, 16384), (16384, None))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def token_counts(texts: list[str], tokenizer, batch: int = 256) -> np.ndarray:
    counts = []
    for start in range(0, len(texts), batch):
        counts.extend(len(ids) for ids in tokenizer.encode_batch(texts[start : start + batch]))
    return np.asarray(counts, dtype=np.int64)


def shares(lengths: np.ndarray) -> dict[str, float]:
    """The share of tokens in documents of each length bucket."""
    total = max(1, int(lengths.sum()))
    out = {}
    for low, high in BUCKETS:
        inside = (lengths >= low) & (lengths < high if high else True)
        name = f"{low}-{high}" if high else f"{low}+"
        out[name] = round(float(lengths[inside].sum()) / total, 4)
    return out


def mix(short: np.ndarray, long: np.ndarray, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Indices: short documents for training and validation, long documents for training (pure: the
    same lengths and settings give the same mix)."""
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(short))
    held = max(1, round(args.val_fraction * len(short)))
    val, train_short = np.sort(order[:held]), np.sort(order[held:])
    short_tokens = int(short[train_short].sum())
    want = args.long_share / (1 - args.long_share) * short_tokens  # long tokens for that share of the mix
    eligible = rng.permutation(np.flatnonzero(long >= args.long_min))
    taken, total = [], 0
    for i in eligible:
        if total >= want:
            break
        taken.append(int(i))
        total += int(long[i])
    return {"val": val, "train_short": train_short, "train_long": np.sort(np.asarray(taken, dtype=np.int64))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", required=True, type=Path, help='JSONL of {"text", "domain"}: short documents')
    parser.add_argument("--split", required=True, type=Path, help="prepare_data.py's --out (its train.jsonl)")
    parser.add_argument("--tokenizer", required=True, help="the model's tokenizer (directory or .gguf)")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "miniature-mix")
    parser.add_argument("--long-min", type=int, default=8192, help="tokens of a long document at least")
    parser.add_argument("--long-share", type=float, default=0.15, help="long documents' share of the mix's tokens")
    parser.add_argument("--val-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 <= args.long_share < 1:
        parser.error("--long-share must be in [0, 1)")
    tokenizer = load_tokenizer(args.tokenizer)
    short_docs = read_jsonl(args.short)
    long_docs = read_jsonl(args.split / "train.jsonl")
    short = token_counts([d["text"] for d in short_docs], tokenizer)
    long = token_counts([d["text"] for d in long_docs], tokenizer)
    picked = mix(short, long, args)
    train = [("short", int(i)) for i in picked["train_short"]] + [("long", int(i)) for i in picked["train_long"]]
    order = np.random.default_rng(args.seed + 1).permutation(len(train))
    train = [train[i] for i in order]
    source = {"short": (short_docs, short), "long": (long_docs, long)}
    args.out.mkdir(parents=True, exist_ok=True)

    def write(name: str, items: list[tuple[str, int]]) -> None:
        lines = (
            json.dumps({"text": source[s][0][i]["text"], "domain": source[s][0][i].get("domain")}) for s, i in items
        )
        atomic_write(args.out / f"{name}.jsonl", "\n".join(lines) + "\n")

    write("train", train)
    write("val", [("short", int(i)) for i in picked["val"]])
    train_lengths = np.asarray([source[s][1][i] for s, i in train], dtype=np.int64)
    manifest = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "inputs": {"short": file_sha256(args.short), "split_train": file_sha256(args.split / "train.jsonl")},
        "train": {
            "documents": len(train),
            "tokens": int(train_lengths.sum()),
            "short_documents": len(picked["train_short"]),
            "short_tokens": int(short[picked["train_short"]].sum()),
            "long_documents": len(picked["train_long"]),
            "long_tokens": int(long[picked["train_long"]].sum()),
            "token_share_by_document_length": shares(train_lengths),
            "median_document_tokens": int(np.median(train_lengths)),
        },
        "val": {"documents": len(picked["val"]), "tokens": int(short[picked["val"]].sum())},
        "sources": {"short": shares(short), "long_train": shares(long)},
    }
    atomic_write(args.out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    t = manifest["train"]
    print(
        f"train: {t['documents']} documents, {t['tokens']:,} tokens ({t['long_documents']} long documents, "
        f"{t['long_tokens'] / t['tokens']:.1%} of tokens); token share by document length: {t['token_share_by_document_length']}"
    )
    return manifest


if __name__ == "__main__":
    main()
