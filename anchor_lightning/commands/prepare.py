"""``anchor-lightning prepare``: tokenize and pack a config's data ahead of training.

    anchor-lightning prepare --config recipes/llama2-7b/64k-anchor.yaml --data.train=/data/slimpajama.jsonl.zst

Any ``fit`` option may follow. Builds, on the CPU and without a GPU, exactly the caches ``fit`` will
look for (the tokenized documents once per source, the packed rows once per row length and layout,
held-out validation included) under ``data.cache_dir``, and says where they are: a cluster job then
spends no GPU time tokenizing. Run it on a node that sees the cache directory; on a shared file
system one process prepares each entry and the others wait for it.
"""

from __future__ import annotations

import time
from typing import Any

from anchor_lightning.commands.arguments import FIT_OPTIONS, VerbParser
from anchor_lightning.commands.inspect import data_module


def parser() -> VerbParser:
    return VerbParser("prepare", __doc__.split("\n\n")[0].split(": ", 1)[1], FIT_OPTIONS)


def run(argv: list[str]) -> dict:
    _, rest = parser().parse_known_args(argv)
    data = data_module(rest, "prepare")
    start = time.perf_counter()
    data.prepare_data()
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {"seconds": round(seconds, 1)}
    for part, rows in (("train", data.train_rows), ("val", data.val_rows)):
        if rows is None:
            continue
        stats = rows.stats
        summary[part] = {
            "rows": len(rows),
            "documents": stats["documents"],
            "tokens": stats["source_tokens"],
            "directory": str(rows.directory),
        }
        print(
            f"{part}: {len(rows):,} rows of {stats['slots']:,} slots from {stats['documents']:,} documents "
            f"({stats['source_tokens']:,} tokens) in {rows.directory}"
        )
    print(f"prepared in {seconds:.1f} s; fit with the same data options finds these caches")
    return summary
