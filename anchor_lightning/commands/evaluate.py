"""``anchor-lightning evaluate``: long-context evaluation of a Hugging Face checkpoint or a .gguf file.

    anchor-lightning evaluate --model exported/ --data docs.jsonl --lengths 4096 16384 65536 --out eval/
    anchor-lightning evaluate --model model.gguf --rope_theta 2.2e6 --data needles.jsonl \\
        --ppl_data long.jsonl --short_data wiki.jsonl --lengths 4096 32768 --trials 20
    anchor-lightning evaluate --suite ruler --model exported/ --lengths 4096 8192 --samples 100 --out eval/
    anchor-lightning evaluate --suite ruler --compare eval-a/ruler.json eval-b/ruler.json --out eval/

``--suite ruler`` runs RULER exactly as NVIDIA/RULER generates and scores it (``anchor_lightning/eval/ruler``,
docs/ruler.md): greedy generation, each task's budget, RULER's metrics, a 95% interval on every score;
writes ``ruler.json`` (settings, data digests, every sample's prediction and score) and
``ruler_heatmap.png``. ``--compare A B`` writes the paired difference of two such results.

Needle retrieval (single needle, multi-key, multi-value) built from the corpus's own text at each
context length and depth, scored by log-likelihood over ``--candidates`` answers (chance 1/K), with a
95% Wilson interval per task and length; perplexity by position bucket on the longest documents of
``--ppl_data`` (default ``--data``), and optionally short-context perplexity on ``--short_data``, each
with a 95% interval over documents. Writes ``long_context.json`` and ``niah_heatmap.png`` to ``--out``
and prints a summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from anchor_lightning.checkpoint.identity import VOLATILE
from anchor_lightning.commands.arguments import (
    VerbParser,
    add_corpus_arguments,
    add_lengths_argument,
    add_run_arguments,
    at_least,
    lengths_to_run,
)
from anchor_lightning.data.corpus import corpus_tokenizer, first_token_of, load_documents
from anchor_lightning.errors import UserError
from anchor_lightning.eval.niah import TASKS
from anchor_lightning.eval.report import heat_map
from anchor_lightning.eval.ruler.partial import PartialRuler, weights_fingerprint
from anchor_lightning.eval.ruler.tasks import DEFAULT_VERSION, TASK_SETS, VERSIONS
from anchor_lightning.eval.scoring import HFScorer
from anchor_lightning.eval.suite import Corpora, NeedleSettings, default_lengths, evaluate, summary_lines
from anchor_lightning.model.inference import load_inference_model
from anchor_lightning.paths import atomic_write, writable_directory


def parser() -> VerbParser:
    p = VerbParser("evaluate", __doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument(
        "--model", default=None, help="a Hugging Face checkpoint directory (e.g. from `export`) or a .gguf file"
    )
    p.add_argument(
        "--suite",
        default="needles",
        choices=["needles", "ruler"],
        help="needles: this package's needle tasks scored by log-likelihood, with perplexity; ruler: NVIDIA's RULER",
    )
    add_corpus_arguments(p)
    p.add_argument("--ppl_data", default=None, help="corpus for perplexity by position (default: --data)")
    p.add_argument("--short_data", default=None, help="corpus for short-context perplexity (default: none)")
    p.add_argument(
        "--short_length", type=at_least(2), default=2048, help="tokens per document of the short-context perplexity"
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help=f"needles: {', '.join(TASKS)} (default all); ruler: task names or sets {', '.join(TASK_SETS)} "
        "(default offline: every task but QA)",
    )
    add_lengths_argument(
        p,
        16,
        "needles: 1/4, 1/2 and all of the model's max_position_embeddings, 4K at most on CPU; ruler: 4K, 8K ... "
        "up to it, 4K alone on CPU",
    )
    p.add_argument("--depths", type=at_least(0.0, float, 1.0), nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--trials", type=at_least(1), default=5, help="trials per (task, length, depth)")
    p.add_argument("--candidates", type=at_least(2), default=10, help="answers to choose from (chance = 1 / this)")
    p.add_argument("--ppl_documents", type=at_least(0), default=4, help="long documents for perplexity by position")
    p.add_argument(
        "--batch_tokens", type=at_least(1), default=131072, help="prompt tokens scored at once (trials of one length)"
    )
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    # RULER (--suite ruler)
    p.add_argument("--samples", type=at_least(1), default=500, help="samples per task and length (RULER's default)")
    p.add_argument("--ruler_version", default=DEFAULT_VERSION, choices=list(VERSIONS), help="NVIDIA/RULER release")
    p.add_argument("--ruler_seed", type=int, default=42, help="RULER's generator seed")
    p.add_argument(
        "--template",
        default="base",
        choices=["base", "chat"],
        help="base: the task text; chat: the tokenizer's chat template",
    )
    p.add_argument(
        "--qa_data",
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help="squad=dev-v2.0.json hotpotqa=hotpot_dev_distractor_v1.json",
    )
    p.add_argument(
        "--tokenizer_specials",
        action="store_true",
        help="feed exactly tokenizer(prompt), as RULER does, instead of --first_token + the prompt",
    )
    p.add_argument(
        "--prefill_kernel",
        default="auto",
        choices=["auto", "flash", "cudnn"],
        help="attention of the prompts' prefill on a GPU: auto: cuDNN's where it agrees with FlashAttention on this "
        "model's heads (faster on Hopper), else FlashAttention; flash; cudnn",
    )
    p.add_argument(
        "--batch_size",
        type=at_least(1),
        default=256,
        help="most prompts decoded together (the memory plan may take fewer)",
    )
    p.add_argument("--workers", type=at_least(1), default=None, help="processes building samples (default: every core)")
    p.add_argument(
        "--compare", nargs=2, default=None, metavar="RULER_JSON", help="the paired difference of two results, A - B"
    )
    add_run_arguments(p, "eval", "seed of the needle trials (the same trials for every model)")
    return p


def run(argv: list[str]) -> dict:
    args = parser().parse_args(argv)
    if args.compare:
        return run_compare(args)
    if args.model is None:
        raise UserError("the following arguments are required: --model (see anchor-lightning evaluate --help)")
    if args.suite == "ruler":
        return run_ruler(args)
    tasks = args.tasks or list(TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise UserError(f"unknown needle task {unknown[0]!r} (choose from {', '.join(TASKS)})", field="--tasks")
    out = writable_directory(args.out, "--out")
    model, path = load_inference_model(
        args.model, rope_theta=args.rope_theta, dtype=getattr(torch, args.dtype), device=args.device
    )
    lengths = lengths_to_run(model.config, args.lengths, args.device, default_lengths)
    tokenizer = corpus_tokenizer(args.tokenizer, path)
    check_vocabulary(len(tokenizer), model.config.vocab_size)
    first_token = first_token_of(tokenizer, args.first_token)

    def encode(text: str) -> list[int]:
        return tokenizer.encode_batch([text])[0]

    corpora = Corpora(
        load_documents(args.data, tokenizer),
        ppl=load_documents(args.ppl_data, tokenizer) if args.ppl_data else None,
        short=load_documents(args.short_data, tokenizer) if args.short_data else None,
    )
    settings = NeedleSettings(
        tasks=tuple(tasks),
        lengths=tuple(lengths),
        depths=tuple(args.depths),
        trials=args.trials,
        candidates=args.candidates,
        ppl_documents=args.ppl_documents,
        short_length=args.short_length,
        seed=args.seed,
        batch_tokens=args.batch_tokens,
        progress=not args.no_progress,
    )
    results = evaluate(HFScorer(model), corpora, encode, first_token, settings)
    results.update(
        model=args.model,
        data=args.data,
        ppl_data=args.ppl_data or args.data,
        short_data=args.short_data,
        rope_parameters=dict(model.config.rope_parameters or {}),
        first_token=first_token,
    )
    atomic_write(out / "long_context.json", json.dumps(results, indent=1))
    figure = heat_map(results["niah"], out / "niah_heatmap.png")
    print("\n".join(summary_lines(results)))
    print(f"wrote {out / 'long_context.json'} and {figure}")
    return results


def check_vocabulary(tokenizer_size: int, model_size: int) -> None:
    """A tokenizer whose ids the model cannot embed stops here (it would index past the embedding)."""
    if tokenizer_size > model_size:
        raise UserError(
            f"the tokenizer's vocabulary ({tokenizer_size}) is larger than the model's embedding ({model_size})",
            field="--tokenizer",
        )


def _qa_files(pairs: list[str]) -> dict[str, str]:
    files = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not path:
            raise UserError(f"{pair!r} is not NAME=PATH (squad=... or hotpotqa=...)", field="--qa_data")
        files[name] = path
    return files


def ruler_lengths(trained: int | None, device: str) -> list[int]:
    """RULER's grid, 4K, 8K, 16K ... up to the length the model was trained on (4K alone on CPU)."""
    top = 4096 if device == "cpu" else max(4096, trained or 4096)
    lengths, n = [], 4096
    while n <= top:
        lengths.append(n)
        n *= 2
    return lengths


def ruler_key(model, dtype: str, settings, data: dict) -> dict:
    """What makes a RULER group's samples and predictions what they are (``eval/ruler/partial.py``):
    the weights as loaded, the config, the dtype, every setting but the lengths and tasks asked for,
    the data's digests."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in VOLATILE}
    chosen = {k: v for k, v in asdict(settings).items() if k not in ("lengths", "tasks")}
    return {"model": weights_fingerprint(model), "config": config, "dtype": dtype, "settings": chosen, "data": data}


def run_ruler(args) -> dict:
    from anchor_lightning.eval.generation import GenerationStats, check_prefill_kernel
    from anchor_lightning.eval.ruler import suite

    out = writable_directory(args.out, "--out")
    settings = suite.RulerSettings(
        tasks=args.tasks or ["offline"],
        lengths=args.lengths or [],
        samples=args.samples,
        seed=args.ruler_seed,
        version=args.ruler_version,
        template=args.template,
        qa_data=_qa_files(args.qa_data),
        first_token=args.first_token,
        tokenizer_specials=args.tokenizer_specials,
        prefill_kernel=args.prefill_kernel,
    )
    check_prefill_kernel(settings.prefill_kernel, torch.device(args.device).type)
    # bad settings stop before the model loads; lengths left to the model are checked once it has
    (settings if args.lengths is not None else replace(settings, lengths=[4096])).check()
    began = time.perf_counter()
    model, path = load_inference_model(
        args.model, rope_theta=args.rope_theta, dtype=getattr(torch, args.dtype), device=args.device
    )
    settings.lengths = lengths_to_run(model.config, settings.lengths, args.device, ruler_lengths)
    tokenizer_dir = args.tokenizer or (str(path) if path is not None else None)
    if tokenizer_dir is None or not any(Path(tokenizer_dir).glob("tokenizer*")):
        raise UserError("RULER needs the model's Hugging Face tokenizer: give --tokenizer DIR", field="--tokenizer")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    check_vocabulary(len(tokenizer), model.config.vocab_size)
    prepared = time.perf_counter()
    samples, data = suite.prepare_samples(tokenizer_dir, settings, args.workers, progress=not args.no_progress)
    built = time.perf_counter()
    if args.no_progress:
        print(f"RULER: model loaded in {prepared - began:.1f} s, samples ready in {built - prepared:.1f} s", flush=True)
    stats = GenerationStats()
    log = (lambda line: print(line, flush=True)) if args.no_progress else None  # a log file's progress
    partial = PartialRuler(out, ruler_key(model, args.dtype, settings, data))
    resumed = [group for group in samples if partial.get(*group) is not None]  # done by an earlier run
    records = suite.generate_predictions(
        model,
        tokenizer,
        samples,
        settings,
        stats,
        progress=not args.no_progress,
        most=args.batch_size,
        log=log,
        earlier=partial.get,
        finished=partial.add,
    )
    done = time.perf_counter()
    result = suite.results(
        records,
        settings,
        data,
        {
            "model": args.model,
            "dtype": args.dtype,
            "device": torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu",
            "rope_parameters": dict(model.config.rope_parameters or {}),
            "first_token": None
            if settings.tokenizer_specials
            else (
                settings.first_token if settings.first_token is not None else suite.model_first_token(model, tokenizer)
            ),
            "seconds": {
                "load": round(prepared - began, 2),
                "samples": round(built - prepared, 2),
                "generation": round(done - built, 2),
            },
            "generation": stats.as_json(),
            "resumed": {"groups": len(resumed), "samples": sum(len(samples[g]) for g in resumed)},
        },
    )
    json_path, figure = suite.write(result, out)
    partial.remove()
    print("\n".join(suite.summary_lines(result)))
    g = result["generation"]
    print(
        f"  prefill {g['prefill_tokens']:,} tokens at {g['prefill_tokens_per_second'] or 0:,.0f}/s, decode "
        f"{g['decode_tokens']:,} tokens at {g['decode_tokens_per_second'] or 0:,.0f}/s (CUDA graph in "
        f"{g['graph_batches']} of {g['graph_batches'] + g['eager_batches']} batches; prefill attention: "
        f"{g['prefill_kernel']}); samples built in "
        f"{result['seconds']['samples']:.1f} s, generation {result['seconds']['generation']:.1f} s"
    )
    print(f"wrote {json_path} and {figure}")
    return result


def _read_result(path: str) -> dict:
    try:
        result = json.loads(Path(path).read_text())
    except OSError as err:
        raise UserError(f"cannot read ({err.strerror or err})", file=path, field="--compare") from None
    except json.JSONDecodeError as err:
        raise UserError(
            f"not JSON ({err.msg} at line {err.lineno}, column {err.colno})", file=path, field="--compare"
        ) from None
    if not isinstance(result, dict) or result.get("suite") != "ruler" or "samples" not in result:
        raise UserError("not a ruler.json written by evaluate --suite ruler", file=path, field="--compare")
    from anchor_lightning.eval.ruler.suite import check_scores

    check_scores(result, file=path)  # scores that do not follow from the predictions are never paired
    return result


def run_compare(args) -> dict:
    from anchor_lightning.eval.ruler import suite

    a, b = (_read_result(p) for p in args.compare)
    comparison = {"a": args.compare[0], "b": args.compare[1], **suite.compare(a, b)}
    out = writable_directory(args.out, "--out")
    from anchor_lightning.paths import atomic_write

    path = atomic_write(out / "ruler_compare.json", json.dumps(comparison, indent=1))
    print(
        f"A - B on {comparison['samples']} shared samples (score points, 95% interval, samples each scored higher on, sign test):"
    )
    for length, row in comparison["lengths"].items():
        o = row["overall"]
        print(
            f"  {int(length):>7}: {100 * o['difference']:+.2f} [{100 * o['difference_low']:+.2f}, {100 * o['difference_high']:+.2f}]"
            f"  A higher {o['higher_a']}, B higher {o['higher_b']}, p = {o['p_value']:.3g}"
        )
    o = comparison["all"]
    print(
        f"      all: {100 * o['difference']:+.2f} [{100 * o['difference_low']:+.2f}, {100 * o['difference_high']:+.2f}], p = {o['p_value']:.3g}"
    )
    print(f"wrote {path}")
    return comparison
