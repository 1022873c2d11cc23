"""The miniature's data: a fixed split of a long-document corpus into training, validation and
held-out evaluation documents, by the model's own token counts.

    python lab/miniature/prepare_data.py --corpus longdocs.jsonl --short wikitext2-valid.jsonl \
        --tokenizer SmolLM2-135M-Instruct.Q4_1.gguf --out data/miniature

Input: JSONL lines ``{"text": ..., "domain": ...}``. Writes to ``--out`` (all ``{"text", "domain"}`` JSONL):

* ``ppl_long.jsonl``: ``--ppl-per-domain`` documents of each domain with at least ``--ppl-min``
  tokens (perplexity by position out to 32K);
* ``needles.jsonl``: ``--needle-per-domain`` documents of each domain with ``--needle-min`` to
  ``--ppl-min`` tokens (the haystack text of needle retrieval);
* ``val.jsonl``: a ``--val-fraction`` of the remaining documents (val/loss during training);
* ``train.jsonl``: every other document, in the corpus's order;
* ``short.jsonl``: a copy of ``--short`` (short-context perplexity: general ability kept);
* ``manifest.json``: the settings, the corpus's digest and, per part, documents, tokens and indices.

The choice is a seeded draw over the corpus's line numbers: the same corpus, tokenizer and settings
give the same split on any machine. No evaluation document is ever trained on.
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


def choose(candidates: dict[str, list[int]], per_domain: int, rng: np.random.Generator) -> list[int]:
    """``per_domain`` indices of each domain's candidates (all of them where a domain has fewer)."""
    picked = []
    for domain in sorted(candidates):
        pool = candidates[domain]
        take = min(per_domain, len(pool))
        picked.extend(int(i) for i in rng.choice(pool, size=take, replace=False))
    return sorted(picked)


def split(lengths: np.ndarray, domains: list[str], args: argparse.Namespace) -> dict[str, list[int]]:
    rng = np.random.default_rng(args.seed)

    def by_domain(keep) -> dict[str, list[int]]:
        return {d: [i for i in range(len(lengths)) if domains[i] == d and keep(lengths[i])] for d in set(domains)}

    ppl = choose(by_domain(lambda n: n >= args.ppl_min), args.ppl_per_domain, rng)
    needles = choose(by_domain(lambda n: args.needle_min <= n < args.ppl_min), args.needle_per_domain, rng)
    held = set(ppl) | set(needles)
    rest = [i for i in range(len(lengths)) if i not in held]
    val = sorted(int(i) for i in rng.choice(rest, size=max(1, round(args.val_fraction * len(rest))), replace=False))
    train = [i for i in rest if i not in set(val)]
    return {"ppl_long": ppl, "needles": needles, "val": val, "train": train}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, type=Path, help='JSONL of {"text": ..., "domain": ...}')
    parser.add_argument(
        "--short", type=Path, default=None, help="JSONL of short-context documents (copied as short.jsonl)"
    )
    parser.add_argument("--tokenizer", required=True, help="the model's tokenizer (directory or .gguf)")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "miniature")
    parser.add_argument("--ppl-min", type=int, default=32768)
    parser.add_argument("--ppl-per-domain", type=int, default=3)
    parser.add_argument("--needle-min", type=int, default=8192)
    parser.add_argument("--needle-per-domain", type=int, default=4)
    parser.add_argument("--val-fraction", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    records = [json.loads(line) for line in args.corpus.open(encoding="utf-8") if line.strip()]
    tokenizer = load_tokenizer(args.tokenizer)
    lengths = np.array([len(ids) for ids in tokenizer.encode_batch([r["text"] for r in records])])
    domains = [r.get("domain", "none") for r in records]
    parts = split(lengths, domains, args)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "corpus": str(args.corpus),
        "corpus_sha256": file_sha256(args.corpus),
        "tokenizer": str(args.tokenizer),
        "settings": {k: v for k, v in vars(args).items() if k not in ("corpus", "short", "tokenizer", "out")},
        "parts": {},
    }
    for name, indices in parts.items():
        lines = [json.dumps({"text": records[i]["text"], "domain": domains[i]}) + "\n" for i in indices]
        atomic_write(args.out / f"{name}.jsonl", "".join(lines))  # a killed rerun leaves the old part whole
        manifest["parts"][name] = {
            "documents": len(indices),
            "tokens": int(lengths[indices].sum()),
            "domains": {d: sum(1 for i in indices if domains[i] == d) for d in sorted(set(domains))},
            "indices": indices if name != "train" else f"all other {len(indices)} lines",
        }
    if args.short is not None:
        atomic_write(args.out / "short.jsonl", args.short.read_bytes())
        manifest["short"] = {"file": str(args.short), "sha256": file_sha256(args.short)}
    atomic_write(args.out / "manifest.json", json.dumps(manifest, indent=1))
    for name, part in manifest["parts"].items():
        print(f"{name:>9}: {part['documents']:5d} documents, {part['tokens']:>10,} tokens  {part['domains']}")
    print(f"wrote {args.out}")
    return manifest


if __name__ == "__main__":
    main()
