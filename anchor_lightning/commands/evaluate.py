"""``anchor-lightning evaluate``: long-context evaluation of a Hugging Face checkpoint or a .gguf file.

    anchor-lightning evaluate --model exported/ --data docs.jsonl --lengths 4096 16384 65536 --out eval/
    anchor-lightning evaluate --model model.gguf --rope_theta 2.2e6 --data needles.jsonl \\
        --ppl_data long.jsonl --short_data wiki.jsonl --lengths 4096 32768 --trials 20

Needle retrieval (single needle, multi-key, multi-value) built from the corpus's own text at each
context length and depth, scored by log-likelihood over ``--candidates`` answers (chance 1/K), with a
95% Wilson interval per task and length; perplexity by position bucket on the longest documents of
``--ppl_data`` (default ``--data``), and optionally short-context perplexity on ``--short_data``, each
with a 95% interval over documents. Writes ``long_context.json`` and ``niah_heatmap.png`` to ``--out``
and prints a summary.
"""

from __future__ import annotations

import json
import warnings

import torch

from anchor_lightning.commands.arguments import VerbParser, add_corpus_arguments, add_run_arguments
from anchor_lightning.data.corpus import corpus_tokenizer, first_token_of, load_documents
from anchor_lightning.eval.niah import TASKS
from anchor_lightning.eval.report import heat_map
from anchor_lightning.eval.scoring import HFScorer
from anchor_lightning.eval.suite import default_lengths, evaluate, summary_lines
from anchor_lightning.model.inference import load_inference_model
from anchor_lightning.paths import writable_directory


def parser() -> VerbParser:
    p = VerbParser("evaluate", __doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument(
        "--model", required=True, help="a Hugging Face checkpoint directory (e.g. from `export`) or a .gguf file"
    )
    add_corpus_arguments(p)
    p.add_argument("--ppl_data", default=None, help="corpus for perplexity by position (default: --data)")
    p.add_argument("--short_data", default=None, help="corpus for short-context perplexity (default: none)")
    p.add_argument("--short_length", type=int, default=2048, help="tokens per document of the short-context perplexity")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=None,
        help="context lengths (default: 1/4, 1/2 and all of the model's max_position_embeddings; 4K at most on CPU)",
    )
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--trials", type=int, default=5, help="trials per (task, length, depth)")
    p.add_argument("--candidates", type=int, default=10, help="answers to choose from (chance = 1 / this)")
    p.add_argument("--ppl_documents", type=int, default=4, help="long documents for perplexity by position")
    p.add_argument(
        "--batch_tokens", type=int, default=131072, help="prompt tokens scored at once (trials of one length)"
    )
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    add_run_arguments(p, "eval", "seed of the needle trials (the same trials for every model)")
    return p


def run(argv: list[str]) -> dict:
    args = parser().parse_args(argv)
    out = writable_directory(args.out, "--out")
    model, path = load_inference_model(
        args.model, rope_theta=args.rope_theta, dtype=getattr(torch, args.dtype), device=args.device
    )
    trained = getattr(model.config, "max_position_embeddings", None)
    lengths = args.lengths or default_lengths(trained, torch.device(args.device).type)
    if trained and max(lengths) > trained:
        warnings.warn(
            f"lengths up to {max(lengths)} exceed the model's max_position_embeddings ({trained})", stacklevel=1
        )
    tokenizer = corpus_tokenizer(args.tokenizer, path)
    first_token = first_token_of(tokenizer, args.first_token)

    def encode(text: str) -> list[int]:
        return tokenizer.encode_batch([text])[0]

    results = evaluate(
        HFScorer(model),
        load_documents(args.data, tokenizer),
        encode,
        first_token,
        args.tasks,
        lengths,
        args.depths,
        args.trials,
        args.candidates,
        args.ppl_documents,
        args.seed,
        progress=not args.no_progress,
        ppl_corpus=load_documents(args.ppl_data, tokenizer) if args.ppl_data else None,
        short_corpus=load_documents(args.short_data, tokenizer) if args.short_data else None,
        short_length=args.short_length,
        batch_tokens=args.batch_tokens,
    )
    results.update(
        model=args.model,
        data=args.data,
        ppl_data=args.ppl_data or args.data,
        short_data=args.short_data,
        rope_parameters=dict(model.config.rope_parameters or {}),
        first_token=first_token,
    )
    (out / "long_context.json").write_text(json.dumps(results, indent=1))
    figure = heat_map(results["niah"], out / "niah_heatmap.png")
    print("\n".join(summary_lines(results)))
    print(f"wrote {out / 'long_context.json'} and {figure}")
    return results
