"""``python -m anchor_lightning diagnose``: measure BF16 RoPE's departure from relative positions.

    python -m anchor_lightning diagnose --model /path/to/hf-checkpoint --data docs.jsonl --out diag/
    python -m anchor_lightning diagnose --model recipes/llama-1b/64k-anchor.yaml --lengths 4096 8192 16384

``--model`` is a Hugging Face checkpoint directory, a ``.gguf`` file, a ``config.json``, or a recipe
YAML (random init from its ``model.config``). Writes ``rope_deviation.json`` (every number) and PNG plots to ``--out``
and prints a summary. See docs/rope-precision.md for how to read them.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
import yaml

from anchor_lightning.checkpoint.gguf import local_checkpoint
from anchor_lightning.data.corpus import add_corpus_arguments, load_corpus
from anchor_lightning.diagnostics.plots import plot_sweep
from anchor_lightning.diagnostics.sweep import PAPER_OFFSETS, SweepSettings, run_sweep, summary
from anchor_lightning.errors import UserError
from anchor_lightning.model.build import configure, load_config


def load_model(source: str, rope_theta: float | None, seed: int, max_length: int):
    """(fp32 model, its checkpoint directory or None)."""
    from transformers import AutoModelForCausalLM

    path = Path(local_checkpoint(source, field="--model"))
    if path.is_dir():
        config = configure(load_config(str(path), None), max_length, rope_theta)
        model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32, attn_implementation="sdpa")
        return model.eval(), path
    if not path.is_file():
        raise UserError("no such model directory, config or recipe", file=source)
    if path.suffix in (".yaml", ".yml"):
        recipe = yaml.safe_load(path.read_text())["model"]
        config = configure(load_config(None, recipe["config"]), max_length, rope_theta or recipe.get("rope_theta"))
    else:
        config = configure(load_config(None, str(path)), max_length, rope_theta)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa").eval(), None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m anchor_lightning diagnose", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="HF checkpoint directory, .gguf file, config.json, or recipe YAML")
    add_corpus_arguments(parser)
    parser.add_argument("--lengths", type=int, nargs="+", default=list(SweepSettings.lengths))
    parser.add_argument("--offsets", type=int, nargs="+", default=list(PAPER_OFFSETS))
    parser.add_argument("--b", type=int, default=16, help="the fixed offset b")
    parser.add_argument("--offset-length", type=int, default=4096, help="sequence length of the offset sweep")
    parser.add_argument("--sequences", type=int, default=4, help="text windows averaged per point (paper: 50)")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--rope-theta", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0, help="random init seed (config or recipe models)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="diagnostics")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    master, checkpoint = load_model(args.model, args.rope_theta, args.seed, max(args.lengths) + max(args.offsets) + 1)
    _, first_token, documents = load_corpus(args, checkpoint)
    if max(int(d.max()) for d in documents) >= master.config.vocab_size:
        raise UserError(f"the data's token ids exceed the model's vocabulary ({master.config.vocab_size})", field="--data")
    settings = SweepSettings(
        lengths=tuple(args.lengths), offsets=tuple(args.offsets), b=args.b, offset_length=args.offset_length,
        sequences=args.sequences, dtypes=tuple(args.dtypes),
    )

    def model_for(dtype: str):
        return copy.deepcopy(master).to(device=args.device, dtype=getattr(torch, dtype))

    results = run_sweep(model_for, documents, first_token, settings, progress=not args.no_progress)
    results["model"] = {"source": args.model, "rope_parameters": dict(master.config.rope_parameters or {})}
    results["data"] = args.data
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rope_deviation.json").write_text(json.dumps(results, indent=1))
    figures = plot_sweep(results, out)
    print(summary(results))
    print(f"wrote {out / 'rope_deviation.json'} and {', '.join(str(p) for p in figures)}")
    return results
