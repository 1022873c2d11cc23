"""Data preparation at scale: peak memory and speed of tokenizing and packing synthetic corpora.

    python scripts/bench_data_prep.py --work /tmp/prep-bench --sizes 10M 100M 1B --text 100MB [--out result.json]

Generates (once, kept under ``--work``) pre-tokenized corpora in the paper's release format
(``{"input_ids": [...], "source": [...]}`` lines, documents of exponential length, mean 1,500 tokens,
ids in 3..31999, seed 0) of each size in tokens, and a raw-text corpus (``{"text": ...}`` lines of
random words) of the given size in bytes. Each is then prepared (read, tokenized where it is text,
packed into 4,096-slot per-document rows, 1% of the documents held out) by ``PackedDataModule``
in a fresh process, which reports its peak resident memory (``ru_maxrss``) and the wall time; a
process that imports the same libraries and prepares nothing gives the baseline. Prints one row per
corpus: tokens, seconds, tokens/s, peak RSS and RSS above the baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
import torch, lightning, transformers  # the libraries a real preparation imports
from anchor_lightning.data.datamodule import PackedDataModule
spec = json.loads(sys.argv[1])
start = time.perf_counter()
if spec["train"]:
    data = PackedDataModule(**spec["train"])
    data.prepare_data()
    rows = len(data.train_rows)
else:
    rows = 0
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "rows": rows, "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def amount(text: str) -> int:
    """``10M`` -> 10,000,000; ``1B`` -> 10**9 (tokens); ``100MB`` -> 100,000,000 (bytes)."""
    text = text.upper()
    if len(text) > 2 and text.endswith("B") and text[-2] in "KMG":
        text = text[:-1]
    return int(float(text[:-1]) * UNITS[text[-1]]) if text[-1] in UNITS else int(text)


def write_tokenized(path: Path, tokens: int, seed: int = 0) -> None:
    """Rows of 64 documents each (exponential lengths, mean 1,500, each opening with BOS = 1), the last
    one cut so that the file holds exactly ``tokens`` tokens."""
    rng = np.random.default_rng(seed)
    written = 0
    with path.open("w") as f:
        while written < tokens:
            lengths = np.maximum(1, rng.exponential(1500, size=64).astype(np.int64))
            ends = np.minimum(np.cumsum(lengths), tokens - written)
            ends = ends[: int(np.searchsorted(ends, tokens - written)) + 1]
            starts = np.concatenate([[0], ends[:-1]])
            ids = rng.integers(3, 32000, size=int(ends[-1]))
            ids[starts] = 1
            source = [{"start": int(a), "end": int(b), "domain": "synthetic"} for a, b in zip(starts, ends) if b > a]
            f.write('{"input_ids": [' + ",".join(map(str, ids.tolist())) + '], "source": ' + json.dumps(source) + "}\n")
            written += int(ends[-1])


def write_text(path: Path, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = np.array(
        ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=n)) for n in rng.integers(2, 9, 5000)]
    )
    written = 0
    with path.open("w") as f:
        while written < size:
            text = " ".join(words[rng.integers(0, len(words), size=int(rng.exponential(900)) + 10)])
            line = json.dumps({"text": text}) + "\n"
            f.write(line)
            written += len(line)


def run(spec: dict) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(root=str(ROOT)), json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"preparation failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="where the corpora and caches go (kept)")
    parser.add_argument("--sizes", nargs="*", default=["10M", "100M", "1B"], help="pre-tokenized corpora, in tokens")
    parser.add_argument("--text", nargs="*", default=["100MB"], help="raw-text corpora, in bytes")
    parser.add_argument("--tokenizer", default=None, help="tokenizer for the text corpora (default: bytes)")
    parser.add_argument("--seq_len", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    baseline = run({"train": None})
    print(f"baseline process (imports only): {baseline['max_rss_kib'] / 2**20:.2f} GiB", flush=True)
    corpora = [("tokenized", size) for size in args.sizes] + [("text", size) for size in args.text]
    for kind, size in corpora:
        path = args.work / f"{kind}-{size}.jsonl"
        if not path.is_file():
            began = time.perf_counter()
            (write_tokenized if kind == "tokenized" else write_text)(path, amount(size))
            print(
                f"generated {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - began:.0f} s",
                flush=True,
            )
        cache = args.work / f"cache-{kind}-{size}"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        spec = {
            "train": {
                "train": str(path),
                "seq_len": args.seq_len,
                "layout": "per_doc",
                "val_fraction": 0.01,
                "cache_dir": str(cache),
                "anchor_id": 1,
                **({"tokenizer": args.tokenizer} if kind == "text" and args.tokenizer else {}),
            }
        }
        result = run(spec)
        metas = [json.loads(m.read_text()) for m in cache.rglob("meta.json")]
        rows_meta = [m for m in metas if "stats" in m]  # the packed-row entries (train and held-out val)
        tokens = sum(m["stats"]["source_tokens"] for m in rows_meta)
        stats = {"documents": sum(m["stats"]["documents"] for m in rows_meta)}
        row = {
            "corpus": f"{kind} {size}",
            "file_gib": path.stat().st_size / 2**30,
            "tokens": tokens,
            "seconds": result["seconds"],
            "tokens_per_sec": tokens / result["seconds"],
            "peak_gib": result["max_rss_kib"] / 2**20,
            "above_baseline_gib": (result["max_rss_kib"] - baseline["max_rss_kib"]) / 2**20,
            "rows": result["rows"],
            "documents": stats.get("documents"),
        }
        results.append(row)
        print(
            f"{row['corpus']:>16}: {tokens:>13,} tokens in {row['seconds']:7.1f} s = {row['tokens_per_sec'] / 1e6:6.2f}M tokens/s, "
            f"peak {row['peak_gib']:.2f} GiB ({row['above_baseline_gib']:+.2f} GiB over the baseline)",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps({"baseline_gib": baseline["max_rss_kib"] / 2**20, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
