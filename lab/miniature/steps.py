"""What each step of the miniature runs (lab/miniature/run.py schedules and runs them): the package's
commands as argument lists, for one setting (``--setting``: the recipes, data and row length), with
the toy sizes of ``--dry-run``. Pure: nothing here runs, reads the clock or writes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "smollm2-135m"

MODES = ("anchor", "full", "intra_doc", "intra_doc_reset")
# setting -> (row length, default suites): long-32k is the first miniature's per-mode recipes on long documents
SETTINGS = {"long-32k": (32768, ["needles"]), "mix-32k": (32768, ["ruler"]), "mix-64k": (65536, ["ruler"])}
# RULER's prefill attention per setting: every model of a comparison is scored with one kernel. long-32k's
# first RULER scores (docs/miniature/ruler-long-32k) ran FlashAttention-2, before cuDNN became auto's choice.
PREFILL_KERNEL = {"long-32k": "flash"}
# fit's extra arguments per setting. At 64K the recipe's RULER callback (5 evaluations of 100 samples at
# 64K, about 200 s on an H200) would add to 64K training and RULER at 4K-64K, which already take about a
# session's 30 minutes of device time per mode (keep.py carries a trained mode into the next session for
# its evaluation): the miniature measures that protocol at 32K (mix-32k) and switches it off here.
FIT_EXTRA = {"mix-64k": ["--trainer.callbacks.every_n_steps=0", "--trainer.callbacks.at_end=false"]}
RULER_DRY = ["--lengths", "1024", "--samples", "1", "--tasks", "niah_single_1", "fwe", "--device", "cpu"]
RULER_DRY += ["--dtype", "float32", "--workers", "1"]
# the recipes' RULER callback at toy size (the dry run's CPU)
CALLBACK_DRY = ["--trainer.callbacks.lengths=[1024]", "--trainer.callbacks.samples=1", "--trainer.callbacks.workers=1"]
CALLBACK_DRY += ["--trainer.callbacks.tasks=[niah_single_1]", "--trainer.callbacks.first_step=1"]
CALLBACK_DRY += ["--trainer.callbacks.every_n_steps=1"]
# the trained models first: the base model can be evaluated in any later session, a trained one only now
EVALUATED = ("anchor", "full", "intra_doc_reset", "intra_doc", "base", "base-theta")
FIRST_TOKEN = "0"  # F = <|endoftext|>: the recipes' data.anchor_id (see their header)

EVAL = [
    "--lengths",
    "4096",
    "8192",
    "16384",
    "32768",
    "--depths",
    "0",
    "0.25",
    "0.5",
    "0.75",
    "1",
    "--trials",
    "20",
    "--ppl_documents",
    "12",
    "--short_length",
    "2048",
]
DIAGNOSE = ["--lengths", "2048", "4096", "8192", "--offsets", "0", "15", "17", "100", "1000", "--sequences", "4"]
DRY_FIT = [
    "--seq_len=1024",
    "--trainer.max_steps=2",
    "--data.micro_batch_size=1",
    "--data.global_batch_size=1",
    "--trainer.accelerator=cpu",
    "--trainer.precision=32-true",
    "--model.backend=sdpa",
    "--model.layout=per_doc",
    "--model.optimizer.init_args.fused=false",
    "--data.num_workers=0",
    "--trainer.limit_val_batches=2",
    "--trainer.val_check_interval=2",
    "--trainer.log_every_n_steps=1",
]
DRY_EVAL = [
    "--lengths",
    "512",
    "1024",
    "--depths",
    "0",
    "1",
    "--trials",
    "1",
    "--ppl_documents",
    "2",
    "--short_length",
    "256",
    "--device",
    "cpu",
]
DRY_DIAGNOSE = [
    "--lengths",
    "256",
    "512",
    "--offsets",
    "0",
    "16",
    "--sequences",
    "1",
    "--offset_length",
    "256",
    "--device",
    "cpu",
]


@dataclass(frozen=True)
class Plan:
    """One setting's commands; ``work`` is the run's folder (rows, checkpoints, exports, results)."""

    setting: str
    work: Path
    gguf: Path
    data: Path
    mix_data: Path
    seed: int = 0
    suites_asked: tuple[str, ...] | None = None
    ruler_samples: int = 100
    dry_run: bool = False
    cache: Path | None = None  # rows and RULER samples, shared by runs on one machine (default: WORK)
    variant: str | None = None  # a named change to the recipes (e.g. fp8): results/MODE-VARIANT
    fit_args: tuple[str, ...] = ()  # the variant's overrides, appended to every fit

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        return cls(
            args.setting,
            args.work.resolve(),
            args.gguf.resolve(),
            args.data.resolve(),
            args.mix_data.resolve(),
            args.seed,
            tuple(args.suites) if args.suites else None,
            args.ruler_samples,
            args.dry_run,
            args.cache.resolve() if getattr(args, "cache", None) else None,
            getattr(args, "variant", None),
            tuple(getattr(args, "fit_arg", None) or ()),
        )

    @property
    def cache_root(self) -> Path:
        """Where the packed rows and the package's caches (RULER's samples) go: every mode trains on the
        same rows and is evaluated on the same samples, so runs on one machine share them."""
        return self.cache or self.work

    @property
    def mixed(self) -> bool:
        return self.setting.startswith("mix-")

    def recipe(self, mode: str) -> Path:
        return RECIPES / (f"32k-{mode}.yaml" if not self.mixed else f"{self.setting.split('-')[1]}-mix.yaml")

    def rope_theta(self) -> str:
        """The recipes' RoPE base (base-theta evaluates the untrained model with it)."""
        return str(float(yaml.safe_load(self.recipe("anchor").read_text())["model"]["rope_theta"]))

    def run_name(self, mode: str) -> str:
        """The mode's run directory under runs/ and checkpoints/ (the recipes' names)."""
        if not self.mixed:
            return f"smollm2-135m-32k-{mode}"
        backend, seq_len = ("sdpa", 1024) if self.dry_run else ("varlen", SETTINGS[self.setting][0])
        return f"smollm2-135m-mix/{mode}-{backend}-{seq_len}"

    def checkpoint(self, mode: str) -> Path:
        return self.work / "checkpoints" / self.run_name(mode) / "last.ckpt"

    def exported(self, mode: str) -> Path:
        return self.work / "exported" / mode

    def results(self, name: str) -> Path:
        """Where a model's results go: ``results/NAME``, or for a trained mode of another row order or a
        variant of the recipe ``results/NAME-seedK``, ``results/NAME-VARIANT`` (both:
        ``NAME-seedK-VARIANT``), so that reports over several runs keep them apart."""
        if name not in MODES:
            return self.work / "results" / name
        suffix = (f"-seed{self.seed}" if self.seed else "") + (f"-{self.variant}" if self.variant else "")
        return self.work / "results" / f"{name}{suffix}"

    def suites(self) -> list[str]:
        return list(self.suites_asked or SETTINGS[self.setting][1])

    def ruler_lengths(self) -> list[str]:
        top, n, out = SETTINGS[self.setting][0], 4096, []
        while n <= top:
            out.append(str(n))
            n *= 2
        return out

    def models(self) -> dict[str, tuple[str, str | None]]:
        """Every model an evaluation may take: name -> (path, RoPE base to set or None)."""
        gguf = str(self.gguf)
        models: dict[str, tuple[str, str | None]] = {"base": (gguf, None), "base-theta": (gguf, self.rope_theta())}
        models.update({mode: (str(self.exported(mode)), None) for mode in MODES})
        return models

    # ---------------------------------------------------------------- the commands
    def fit(self, mode: str) -> list[str]:
        """``fit`` of one mode, resuming from its last.ckpt when one is there."""
        data = self.mix_data if self.mixed else self.data
        train_file = data / ("val.jsonl" if self.dry_run else "train.jsonl")
        argv = [
            "fit",
            "--config",
            str(self.recipe(mode)),
            f"--model.pretrained={self.gguf}",
            f"--data.train={train_file}",
            f"--data.val={data / 'val.jsonl'}",
            f"--data.cache_dir={self.cache_root / 'rows'}",
            f"--data.seed={self.seed}",
            *([f"--model.mode={mode}"] if self.mixed else []),
            *(DRY_FIT if self.dry_run else []),
            *(CALLBACK_DRY if self.dry_run and self.mixed else FIT_EXTRA.get(self.setting, [])),
            *self.fit_args,
        ]
        return argv + (["--ckpt_path=last"] if self.checkpoint(mode).is_file() else [])

    def export(self, mode: str) -> list[str]:
        return ["export", "--ckpt_path", str(self.checkpoint(mode)), "--out", str(self.exported(mode))]

    def evaluations(self, name: str) -> list[tuple[str, list[str]]]:
        """The evaluations of one model, in order, as (log name, argv): RULER and/or this package's needles
        and perplexity (``evaluate``) then ``diagnose``, as the suites ask."""
        model, theta = self.models()[name]
        out = self.results(name)
        rope = ["--rope_theta", theta] if theta else []
        steps = []
        if "ruler" in self.suites():
            argv = [
                "evaluate",
                "--suite",
                "ruler",
                "--model",
                model,
                "--first_token",
                FIRST_TOKEN,
                "--tasks",
                "offline",
            ]
            argv += ["--out", str(out / "ruler"), "--no_progress", *rope]
            if not self.dry_run:  # the dry run's CPU has SDPA's own kernels only
                argv += ["--prefill_kernel", PREFILL_KERNEL.get(self.setting, "auto")]
            argv += RULER_DRY if self.dry_run else ["--lengths", *self.ruler_lengths()]
            argv += [] if self.dry_run else ["--samples", str(self.ruler_samples)]
            steps.append((f"ruler-{name}", argv))
        if "needles" in self.suites():
            corpus = ["--model", model, "--data", str(self.data / "needles.jsonl"), "--first_token", FIRST_TOKEN]
            evaluate = ["evaluate", *corpus, "--ppl_data", str(self.data / "ppl_long.jsonl")]
            evaluate += ["--short_data", str(self.data / "short.jsonl"), "--out", str(out), "--no_progress", *rope]
            steps.append((f"eval-{name}", evaluate + (DRY_EVAL if self.dry_run else EVAL)))
            diagnose = ["diagnose", *corpus, "--out", str(out / "diagnose"), "--no_progress", *rope]
            steps.append((f"diagnose-{name}", diagnose + (DRY_DIAGNOSE if self.dry_run else DIAGNOSE)))
        return steps
