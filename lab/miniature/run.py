"""The miniature end to end, in resumable parts: SmolLM2-135M extended from 8K to 32K (or 64K) in four modes.

    python lab/miniature/run.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --data data/miniature \
        --work /tmp/miniature --deadline 540 --out results/
    python lab/miniature/run.py --setting mix-32k --mix-data data/miniature-mix ... (short documents, RULER)

Settings (``--setting``): ``long-32k``, the first miniature (recipes/smollm2-135m/32k-<mode>.yaml, long
documents, this package's needle tasks and perplexity); ``mix-32k`` and ``mix-64k``
(recipes/smollm2-135m/{32k,64k}-mix.yaml with ``--model.mode``, the short-document mix of
``prepare_mix.py``, RULER during training and after). ``--suites`` chooses the evaluations (``needles``:
``evaluate`` and ``diagnose``; ``ruler``: ``evaluate --suite ruler``, every offline task at 4K ... the
setting's length, ``--ruler-samples`` per task and length); ``--seed`` the row order (a second seed: its
own ``--work``).

Every step is one command of this package (``fit``, ``export``, ``evaluate``, ``diagnose``), run as a
subprocess with its log in ``WORK/logs``; finished steps are recorded in ``WORK/state.json``, so the
same command run again continues where the last one stopped. ``--deadline`` bounds one invocation
(one GPU call): a step that would not finish in the time left is not started, and a training run that
reaches the deadline gets SIGTERM, which makes it save ``last.ckpt`` after the step in progress; the
next invocation resumes it (``fit --ckpt_path last``, exact data position).

Steps, in order:

    train-<mode>   fit recipes/smollm2-135m/32k-<mode>.yaml and export it, for anchor, full, intra_doc,
                   intra_doc_reset (``--modes``); the training checkpoints are removed after the export
    eval-<model>   evaluate + diagnose, ``--parallel`` models at a time on the one GPU: the trained
                   modes as soon as ``--parallel`` of them are exported (when the time left allows it;
                   else after the trainings), then base (the pretrained model, RoPE base 100,000) and
                   base-theta (the same with the recipes' RoPE base, untrained) (``--models``)

Results go to ``WORK/results/<name>/`` (``long_context.json``, ``rope_deviation.json``, ``train.json``
and plots) and, when ``--out`` is given, into ``--out/miniature-results.tar.gz`` (one file: what the
GPU machine can send back). ``lab/miniature/report.py`` turns them into docs/miniature.md.
``--dry-run`` runs every step on the CPU at toy sizes (1K rows, 2 steps, 512-1K contexts) to check
the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "smollm2-135m"
MODES = ("anchor", "full", "intra_doc", "intra_doc_reset")
# setting -> (row length, default suites): long-32k is the first miniature's per-mode recipes on long documents
SETTINGS = {"long-32k": (32768, ["needles"]), "mix-32k": (32768, ["ruler"]), "mix-64k": (65536, ["ruler"])}
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
# first guesses of a step's seconds on one H200 (replaced by what the last run of the same kind took)
GUESS = {"eval": 240.0, "export": 40.0}
TRAIN_MIN_LEFT = 120.0  # do not start (or resume) training with less time left than this
STOP_MARGIN = 45.0  # SIGTERM this long before the deadline: the step in progress and the save finish in time


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = args.work.resolve()
        self.started = time.monotonic()
        self.state_file = self.work / "state.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.is_file() else {"done": {}, "kinds": {}}
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.env = dict(os.environ)
        self.env["ANCHOR_LIGHTNING_CACHE"] = str(self.work / "cache")
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), self.env.get("PYTHONPATH")]))

    # ---------------------------------------------------------------- the setting
    @property
    def mixed(self) -> bool:
        return self.args.setting.startswith("mix-")

    def recipe(self, mode: str) -> Path:
        return RECIPES / (f"32k-{mode}.yaml" if not self.mixed else f"{self.args.setting.split('-')[1]}-mix.yaml")

    def run_name(self, mode: str) -> str:
        """The mode's run directory under runs/ and checkpoints/ (the recipes' names)."""
        if not self.mixed:
            return f"smollm2-135m-32k-{mode}"
        backend, seq_len = ("sdpa", 1024) if self.args.dry_run else ("varlen", SETTINGS[self.args.setting][0])
        return f"smollm2-135m-mix/{mode}-{backend}-{seq_len}"

    def suites(self) -> list[str]:
        return self.args.suites or SETTINGS[self.args.setting][1]

    def ruler_lengths(self) -> list[str]:
        top, n, out = SETTINGS[self.args.setting][0], 4096, []
        while n <= top:
            out.append(str(n))
            n *= 2
        return out

    # ---------------------------------------------------------------- bookkeeping
    def left(self) -> float:
        return self.args.deadline - (time.monotonic() - self.started)

    def save(self) -> None:
        with self.lock:
            self._save()

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_file)

    def finish(self, step: str, kind: str, seconds: float, **extra) -> None:
        with self.lock:
            self.state["done"][step] = {"seconds": round(seconds, 1), **extra}
            self.state["kinds"][kind] = seconds
            self.save()
            self.bundle()
        print(f"[{self.elapsed()}] done {step} in {seconds:.0f} s", flush=True)

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:6.0f}s"

    def fits(self, kind: str) -> bool:
        return self.left() > self.state["kinds"].get(kind, GUESS[kind]) * 1.1

    def command(self, name: str, argv: list[str], stop_at: float | None = None) -> tuple[int, float, bool]:
        """Run ``python -m anchor_lightning ARGV`` with its output in logs/NAME.log; (exit code, seconds,
        whether it was stopped by the deadline)."""
        log = self.work / "logs" / f"{name}.log"
        start = time.monotonic()
        with log.open("a") as out:
            out.write(f"\n$ {' '.join(argv)}\n")
            out.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "anchor_lightning", *argv],
                cwd=self.work,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            stopped = False
            while process.poll() is None:
                if stop_at is not None and not stopped and self.left() < stop_at:
                    process.send_signal(signal.SIGTERM)
                    stopped = True
                time.sleep(1.0)
        seconds = time.monotonic() - start
        if process.returncode != 0:
            tail = log.read_text().splitlines()[-25:]
            print(f"[{self.elapsed()}] {name} failed (exit {process.returncode}); last lines of {log}:", flush=True)
            print("\n".join(tail), flush=True)
        return process.returncode, seconds, stopped

    # ---------------------------------------------------------------- steps
    def evaluate(self, name: str, model: str, theta: str | None = None) -> bool:
        """The ``--suites`` of one model (run in a thread when evaluations share the GPU): RULER, and/or
        this package's needles and perplexity (``evaluate``) then ``diagnose``."""
        out = self.work / "results" / name
        rope = ["--rope_theta", theta] if theta else []
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
            argv += RULER_DRY if self.args.dry_run else ["--lengths", *self.ruler_lengths()]
            argv += [] if self.args.dry_run else ["--samples", str(self.args.ruler_samples)]
            code, _, _ = self.command(f"ruler-{name}", argv)
            if code != 0:
                return False
        if "needles" not in self.suites():
            return True
        data = self.args.data.resolve()
        code, _, _ = self.command(
            f"eval-{name}",
            [
                "evaluate",
                "--model",
                model,
                "--data",
                str(data / "needles.jsonl"),
                "--ppl_data",
                str(data / "ppl_long.jsonl"),
                "--short_data",
                str(data / "short.jsonl"),
                "--first_token",
                FIRST_TOKEN,
                "--out",
                str(out),
                "--no_progress",
                *rope,
                *(DRY_EVAL if self.args.dry_run else EVAL),
            ],
        )
        if code == 0:
            code, _, _ = self.command(
                f"diagnose-{name}",
                [
                    "diagnose",
                    "--model",
                    model,
                    "--data",
                    str(data / "needles.jsonl"),
                    "--first_token",
                    FIRST_TOKEN,
                    "--out",
                    str(out / "diagnose"),
                    "--no_progress",
                    *rope,
                    *(DRY_DIAGNOSE if self.args.dry_run else DIAGNOSE),
                ],
            )
        return code == 0

    def pending_evaluations(self, trained_only: bool = False) -> list[str]:
        """The models of ``--models`` not evaluated yet (with ``trained_only``: the trained and exported ones)."""
        pending = [name for name in self.args.models if f"eval-{name}" not in self.state["done"]]
        if trained_only:
            pending = [name for name in pending if name in MODES and f"export-{name}" in self.state["done"]]
        return pending

    def evaluate_group(self, group: list[str], theta: str) -> bool | None:
        """Evaluate ``group`` at once on the one GPU (a 135M model leaves most of it idle between kernels):
        True when done, None when the last group's time is not left (nothing started), False on a failure."""
        gguf = str(self.args.gguf.resolve())
        models = {"base": (gguf, None), "base-theta": (gguf, theta)}
        models.update({mode: (str(self.work / "exported" / mode), None) for mode in MODES})
        kind = f"eval-group-{max(1, self.args.parallel)}"
        guess = self.state["kinds"].get(kind, self.args.eval_seconds * (1 + 0.5 * (len(group) - 1)))
        if self.left() < guess * 1.1:
            print(f"[{self.elapsed()}] not evaluating {', '.join(group)} now: {self.left():.0f} s left", flush=True)
            return None
        began = time.monotonic()
        with ThreadPoolExecutor(len(group)) as pool:
            results = dict(zip(group, pool.map(lambda name: self.evaluate(name, *models[name]), group)))
        seconds = time.monotonic() - began
        for name in group:
            if results[name]:
                self.finish(f"eval-{name}", kind, seconds)
        return all(results.values())

    def evaluate_all(self, theta: str) -> bool:
        """The pending evaluations, ``--parallel`` at a time; a group starts only if the last group's
        time is left."""
        pending = self.pending_evaluations()
        size = max(1, self.args.parallel)
        for start in range(0, len(pending), size):
            if not self.evaluate_group(pending[start : start + size], theta):
                return False
        return True

    def train(self, mode: str) -> bool:
        step = f"train-{mode}"
        if step in self.state["done"]:
            return True
        if self.left() < TRAIN_MIN_LEFT:
            print(f"[{self.elapsed()}] stopping before {step}: {self.left():.0f} s left", flush=True)
            return False
        data = (self.args.mix_data if self.mixed else self.args.data).resolve()
        train_file = data / ("val.jsonl" if self.args.dry_run else "train.jsonl")
        argv = [
            "fit",
            "--config",
            str(self.recipe(mode)),
            f"--model.pretrained={self.args.gguf.resolve()}",
            f"--data.train={train_file}",
            f"--data.val={data / 'val.jsonl'}",
            f"--data.cache_dir={self.work / 'rows'}",
            f"--data.seed={self.args.seed}",
            *([f"--model.mode={mode}"] if self.mixed else []),
            *(DRY_FIT if self.args.dry_run else []),
            *(CALLBACK_DRY if self.args.dry_run and self.mixed else []),
        ]
        checkpoint = self.work / "checkpoints" / self.run_name(mode) / "last.ckpt"
        if checkpoint.is_file():
            argv.append("--ckpt_path=last")
        code, seconds, stopped = self.command(step, argv, stop_at=STOP_MARGIN)
        parts = self.state.setdefault("train_parts", {}).setdefault(mode, [])
        parts.append(
            {
                "seconds": round(seconds, 1),
                "resumed": "--ckpt_path=last" in argv,
                "stopped_by_deadline": stopped,
                "exit": code,
            }
        )
        self.save()
        if code != 0:
            return False
        if stopped:
            print(f"[{self.elapsed()}] {step} saved last.ckpt at the deadline; run again to resume", flush=True)
            return False
        self.write_train_summary(mode)
        self.finish(step, "train", sum(p["seconds"] for p in parts), parts=len(parts))
        return True

    def export(self, mode: str) -> str | None:
        step = f"export-{mode}"
        target = self.work / "exported" / mode
        if step in self.state["done"]:
            return str(target)
        if not self.fits("export"):
            print(f"[{self.elapsed()}] stopping before {step}: {self.left():.0f} s left", flush=True)
            return None
        checkpoint = self.work / "checkpoints" / self.run_name(mode) / "last.ckpt"
        code, seconds, _ = self.command(step, ["export", "--ckpt_path", str(checkpoint), "--out", str(target)])
        if code != 0:
            return None
        self.finish(step, "export", seconds)
        return str(target)

    def write_train_summary(self, mode: str) -> None:
        """train.json: the logged curves (TensorBoard), tokens/s, seconds per step and wall time."""
        from anchor_lightning.loggers import read_scalars

        scalars = read_scalars(self.work / "runs" / self.run_name(mode))
        rates = [v for _, v, _ in scalars.get("perf/tokens_per_sec", [])]
        losses = scalars.get("train/loss", [])
        # seconds per optimizer step between consecutive logged steps of one process (no restarts inside)
        gaps = [
            (w1 - w0) / (s1 - s0)
            for (s0, _, w0), (s1, _, w1) in zip(losses, losses[1:])
            if s1 > s0 and 0 < w1 - w0 < 600
        ]
        summary = {
            "mode": mode,
            "steps": losses[-1][0] + 1 if losses else 0,
            "tokens": scalars.get("train/tokens_seen", [(0, 0.0, 0)])[-1][1],
            "tokens_per_sec_median": sorted(rates)[len(rates) // 2] if rates else None,
            "seconds_per_step_median": sorted(gaps)[len(gaps) // 2] if gaps else None,
            "wall_seconds": sum(p["seconds"] for p in self.state["train_parts"][mode]),
            "peak_gib": max((v for _, v, _ in scalars.get("memory/peak_gib", [])), default=None),
            "val_loss": scalars.get("val/loss", [(0, None, 0)])[-1][1],
            "curves": {tag: [(s, v) for s, v, _ in values] for tag, values in scalars.items()},
        }
        out = self.work / "results" / mode
        out.mkdir(parents=True, exist_ok=True)
        (out / "train.json").write_text(json.dumps(summary, indent=1))

    def environment(self) -> None:
        import torch
        import transformers

        info = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
            "dry_run": self.args.dry_run,
        }
        from importlib.metadata import PackageNotFoundError, version

        for name in ("lightning", "liger-kernel", "gguf"):
            try:
                info[name.replace("-", "_")] = version(name)
            except PackageNotFoundError:
                info[name.replace("-", "_")] = None
        out = self.work / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "environment.json").write_text(json.dumps(info, indent=1))
        print(f"[{self.elapsed()}] {info}", flush=True)

    def bundle(self) -> None:
        if self.args.out is None:
            return
        self.args.out.mkdir(parents=True, exist_ok=True)
        (self.work / "results").mkdir(parents=True, exist_ok=True)
        (self.work / "results" / "state.json").write_text(json.dumps(self.state, indent=1))
        bundle = self.args.out / "miniature-results.tar.gz"
        partial = bundle.with_name(f".{bundle.name}.tmp")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(self.work / "results", arcname="results")
            tar.add(self.work / "logs", arcname="logs")
        os.replace(partial, bundle)  # whole or absent: a watcher may copy it at any moment

    def run(self) -> bool:
        self.environment()
        theta = str(float(__import__("yaml").safe_load(self.recipe("anchor").read_text())["model"]["rope_theta"]))
        complete = True
        for mode in self.args.modes:
            complete = self.train(mode) and self.export(mode) is not None
            if not complete:
                break
            if not self.args.keep_checkpoints:
                shutil.rmtree(self.work / "checkpoints" / self.run_name(mode), ignore_errors=True)
            # evaluate trained models as soon as a group of them is ready, so that results are bundled
            # (and can travel back) before the next trainings; if the group's time is not left, train on
            ready = self.pending_evaluations(trained_only=True)
            if (
                len(ready) >= max(1, self.args.parallel)
                and self.evaluate_group(ready[: self.args.parallel], theta) is False
            ):
                complete = False
                break
        complete = complete and self.evaluate_all(theta)
        print(
            f"[{self.elapsed()}] {'all steps done' if complete else 'stopped; run again to continue'}: "
            f"{', '.join(self.state['done'])}",
            flush=True,
        )
        return complete


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument(
        "--data", type=Path, default=ROOT / "data" / "miniature", help="lab/miniature/prepare_data.py output"
    )
    parser.add_argument("--work", type=Path, required=True, help="working directory (rows, checkpoints, logs, results)")
    parser.add_argument("--out", type=Path, default=None, help="write miniature-results.tar.gz here")
    parser.add_argument("--deadline", type=float, default=float("inf"), help="seconds this invocation may take")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each mode's checkpoints after its export")
    parser.add_argument(
        "--modes",
        nargs="*",
        default=list(MODES),
        choices=MODES,
        help="modes to train (default: all four; none: evaluate only)",
    )
    parser.add_argument("--models", nargs="+", default=list(EVALUATED), choices=EVALUATED, help="models to evaluate")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="evaluations sharing the GPU at once (on one H200 two at once took 366 s, one alone 154 s: keep 1)",
    )
    parser.add_argument(
        "--eval-seconds",
        type=float,
        default=GUESS["eval"],
        help="first guess of one evaluation's seconds (until one has run; then its measured time)",
    )
    parser.add_argument("--setting", default="long-32k", choices=list(SETTINGS), help="recipes, data and row length")
    parser.add_argument(
        "--mix-data", type=Path, default=ROOT / "data" / "miniature-mix", help="lab/miniature/prepare_mix.py output"
    )
    parser.add_argument(
        "--suites", nargs="+", default=None, choices=["needles", "ruler"], help="default: the setting's"
    )
    parser.add_argument("--ruler-samples", type=int, default=100, help="RULER samples per task and length")
    parser.add_argument("--seed", type=int, default=0, help="the row order (data.seed); a second seed: its own --work")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at toy sizes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runner = Runner(args)
    try:
        complete = runner.run()
    finally:
        runner.bundle()
    return 0 if complete else 3


if __name__ == "__main__":
    sys.exit(main())
