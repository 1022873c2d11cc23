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
own ``--work``); ``--variant NAME --fit-arg=OVERRIDE ...`` a named change to the recipes (e.g. FP8:
``--variant fp8 --fit-arg=--model.float8=tensorwise --fit-arg=--model.float8_layers=all``), whose
trained modes' results are ``MODE-NAME``, paired by ``ruler_report.py`` with the recipe's own.

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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: the lab package beside the library

from anchor_lightning.paths import atomic_write  # noqa: E402
from lab.miniature.ledger import GUESS, STOP_MARGIN, TRAIN_MIN_LEFT, Ledger  # noqa: E402
from lab.miniature.steps import EVALUATED, MODES, SETTINGS, Plan  # noqa: E402

__all__ = ["EVALUATED", "MODES", "SETTINGS", "Runner", "main"]


class Runner:
    """Runs the steps of lab/miniature/steps.py's plan in order, each a subprocess with its log in
    ``WORK/logs``, within the ledger's time budget, and bundles the results after each."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = Plan.from_args(args)
        self.work = self.plan.work
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.work, args.deadline, time.monotonic)
        self.env = dict(os.environ)
        self.env["ANCHOR_LIGHTNING_CACHE"] = str(self.plan.cache_root / "cache")
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), self.env.get("PYTHONPATH")]))

    def say(self, text: str) -> None:
        print(f"[{self.ledger.elapsed()}] {text}", flush=True)

    def finish(self, step: str, kind: str, seconds: float, **extra) -> None:
        with self.ledger.lock:  # evaluations finish from their threads: one bundle written at a time
            self.ledger.finish(step, kind, seconds, **extra)
            self.bundle()
        self.say(f"done {step} in {seconds:.0f} s")

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
                if stop_at is not None and not stopped and self.ledger.left() < stop_at:
                    process.send_signal(signal.SIGTERM)
                    stopped = True
                time.sleep(1.0)
        seconds = time.monotonic() - start
        if process.returncode != 0:
            tail = log.read_text().splitlines()[-25:]
            self.say(f"{name} failed (exit {process.returncode}); last lines of {log}:")
            print("\n".join(tail), flush=True)
        return process.returncode, seconds, stopped

    # ---------------------------------------------------------------- steps
    def train(self, mode: str) -> bool:
        step = f"train-{mode}"
        if self.ledger.done(step):
            return True
        if self.ledger.left() < TRAIN_MIN_LEFT:
            self.say(f"stopping before {step}: {self.ledger.left():.0f} s left")
            return False
        argv = self.plan.fit(mode)
        code, seconds, stopped = self.command(step, argv, stop_at=STOP_MARGIN)
        part = {"seconds": round(seconds, 1), "resumed": "--ckpt_path=last" in argv, "stopped_by_deadline": stopped}
        parts = self.ledger.train_part(mode, {**part, "exit": code})
        if code != 0:
            return False
        if stopped:
            self.say(f"{step} saved last.ckpt at the deadline; run again to resume")
            return False
        rows = rows_identity(self.plan.checkpoint(mode))
        write_train_summary(self.work, self.plan.run_name(mode), mode, parts, self.plan.results(mode), rows)
        self.finish(step, "train", clean_seconds(parts), parts=len(parts))
        return True

    def export(self, mode: str) -> bool:
        step = f"export-{mode}"
        if self.ledger.done(step):
            return True
        if not self.ledger.fits("export"):
            self.say(f"stopping before {step}: {self.ledger.left():.0f} s left")
            return False
        code, seconds, _ = self.command(step, self.plan.export(mode))
        if code != 0:
            return False
        self.finish(step, "export", seconds)
        return True

    def evaluate(self, name: str) -> bool:
        """The plan's evaluations of one model, in order, up to the first that fails (run in a thread
        when evaluations share the GPU)."""
        return all(self.command(log, argv)[0] == 0 for log, argv in self.plan.evaluations(name))

    def pending_evaluations(self, trained_only: bool = False) -> list[str]:
        """The models of ``--models`` not evaluated yet (with ``trained_only``: the trained and exported ones)."""
        pending = [name for name in self.args.models if not self.ledger.done(f"eval-{name}")]
        if trained_only:
            pending = [name for name in pending if name in MODES and self.ledger.done(f"export-{name}")]
        return pending

    def evaluate_group(self, group: list[str]) -> bool | None:
        """Evaluate ``group`` at once on the one GPU (a 135M model leaves most of it idle between kernels):
        True when done, None when the last group's time is not left (nothing started), False on a failure."""
        kind = f"eval-group-{max(1, self.args.parallel)}"
        if not self.ledger.fits(kind, self.args.eval_seconds * (1 + 0.5 * (len(group) - 1))):
            self.say(f"not evaluating {', '.join(group)} now: {self.ledger.left():.0f} s left")
            return None
        self.wait_to_evaluate()
        began = time.monotonic()
        with ThreadPoolExecutor(len(group)) as pool:
            results = dict(zip(group, pool.map(self.evaluate, group)))
        seconds = time.monotonic() - began
        for name in group:
            if results[name]:
                self.finish(f"eval-{name}", kind, seconds)
        return all(results.values())

    def wait_to_evaluate(self) -> None:
        """With ``--evaluate-after FILE``: wait until FILE exists. A training that shares the GPU makes it
        once it holds its peak memory, so that an evaluation (whose generation plans its batches from the
        memory free when it starts) leaves that training room."""
        gate = self.args.evaluate_after
        if gate is None or gate.exists():
            return
        self.say(f"waiting for {gate} before evaluating")
        while not gate.exists():
            time.sleep(2)
        self.say(f"{gate} is there: evaluating")

    def evaluate_all(self) -> bool:
        """The pending evaluations, ``--parallel`` at a time; a group starts only if the last group's
        time is left."""
        pending = self.pending_evaluations()
        size = max(1, self.args.parallel)
        return all(self.evaluate_group(pending[start : start + size]) for start in range(0, len(pending), size))

    # ---------------------------------------------------------------- results
    def environment(self) -> None:
        info = environment(self.args.dry_run)
        out = self.work / "results"
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "environment.json", json.dumps(info, indent=1))
        self.say(str(info))

    def bundle(self) -> None:
        if self.args.out is None:
            return
        self.args.out.mkdir(parents=True, exist_ok=True)
        (self.work / "results").mkdir(parents=True, exist_ok=True)
        atomic_write(self.work / "results" / "state.json", json.dumps(self.ledger.state, indent=1))
        bundle = self.args.out / "miniature-results.tar.gz"
        partial = bundle.with_name(f".{bundle.name}.tmp")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(self.work / "results", arcname="results")
            tar.add(self.work / "logs", arcname="logs")
        os.replace(partial, bundle)  # whole or absent: a watcher may copy it at any moment

    def run(self) -> bool:
        self.environment()
        complete = True
        for mode in self.args.modes:
            complete = self.train(mode) and self.export(mode)
            if not complete:
                break
            if not self.args.keep_checkpoints:
                shutil.rmtree(self.plan.checkpoint(mode).parent, ignore_errors=True)
            # evaluate trained models as soon as a group of them is ready, so that results are bundled
            # (and can travel back) before the next trainings; if the group's time is not left, train on
            ready = self.pending_evaluations(trained_only=True)
            if len(ready) >= max(1, self.args.parallel) and self.evaluate_group(ready[: self.args.parallel]) is False:
                complete = False
                break
        complete = complete and self.evaluate_all()
        done = ", ".join(self.ledger.state["done"]) or "none"
        self.say(f"all steps done: {done}" if complete else f"stopped (steps done: {done}); run again to continue")
        return complete


def clean_seconds(parts: list[dict]) -> float:
    """The seconds of the training parts that exited cleanly (finished, or stopped at a deadline with
    last.ckpt saved): the training's wall time; a failed part's seconds are apart (``failed_seconds``)."""
    return sum(p["seconds"] for p in parts if not p.get("exit"))


def write_train_summary(
    work: Path, run_name: str, mode: str, parts: list[dict], out: Path | None = None, rows: dict | None = None
) -> None:
    """WORK/results/MODE/train.json: the logged curves (TensorBoard), tokens/s, seconds per step, wall time, the
    card and the rows trained on (:func:`rows_identity`). The wall time sums the parts that exited cleanly
    (finished, or stopped at a deadline with last.ckpt saved); a part that failed (out of memory, a crash) is
    ``failed_seconds``, apart, whole: its steps since its last checkpoint are trained again, and where that
    checkpoint was its own its earlier steps are in ``failed_seconds`` too (every part is in state.json)."""
    from anchor_lightning.loggers import read_scalars

    scalars = read_scalars(work / "runs" / run_name)
    rates = [v for _, v, _ in scalars.get("perf/tokens_per_sec", [])]
    losses = scalars.get("train/loss", [])
    # seconds per optimizer step between consecutive logged steps of one process (no restarts inside)
    gaps = [
        (w1 - w0) / (s1 - s0) for (s0, _, w0), (s1, _, w1) in zip(losses, losses[1:]) if s1 > s0 and 0 < w1 - w0 < 600
    ]
    summary = {
        "mode": mode,
        "steps": losses[-1][0] + 1 if losses else 0,
        "tokens": scalars.get("train/tokens_seen", [(0, 0.0, 0)])[-1][1],
        "tokens_per_sec_median": sorted(rates)[len(rates) // 2] if rates else None,
        "seconds_per_step_median": sorted(gaps)[len(gaps) // 2] if gaps else None,
        "wall_seconds": clean_seconds(parts),
        "failed_seconds": sum(p["seconds"] for p in parts if p.get("exit")),
        "peak_gib": max((v for _, v, _ in scalars.get("memory/peak_gib", [])), default=None),
        "val_loss": scalars.get("val/loss", [(0, None, 0)])[-1][1],
        "device": device_name(),
        "rows": rows,
        "curves": {tag: [(s, v) for s, v, _ in values] for tag, values in scalars.items()},
    }
    out = out or work / "results" / mode
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "train.json", json.dumps(summary, indent=1))


def rows_identity(checkpoint: Path) -> dict | None:
    """Which rows a mode trained on, as its last.ckpt records them for resume (the data module's state:
    the data's fingerprint and packing, the number of rows, rows per step and the seed of their order),
    so that the report can show every mode of a comparison trained on the same rows; None without it."""
    if not checkpoint.is_file():
        return None
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)
    except Exception as error:  # the training is done: a summary without its rows beats none
        print(f"run.py: {checkpoint}: its rows could not be read ({error}); train.json records none", flush=True)
        return None
    return state.get("PackedDataModule") or None


def device_name() -> str:
    """The card this process runs on (the CPU's name without one)."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"


def environment(dry_run: bool) -> dict:
    """The versions and the device the results came from."""
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device_name(),
        "dry_run": dry_run,
    }
    for name in ("lightning", "liger-kernel", "gguf"):
        try:
            info[name.replace("-", "_")] = version(name)
        except PackageNotFoundError:
            info[name.replace("-", "_")] = None
    return info


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
    parser.add_argument(
        "--evaluate-after",
        type=Path,
        default=None,
        metavar="FILE",
        help="evaluate only once FILE exists (made when a training sharing the GPU holds its peak memory)",
    )
    parser.add_argument("--setting", default="long-32k", choices=list(SETTINGS), help="recipes, data and row length")
    parser.add_argument(
        "--mix-data", type=Path, default=ROOT / "data" / "miniature-mix", help="lab/miniature/prepare_mix.py output"
    )
    parser.add_argument(
        "--suites", nargs="+", default=None, choices=["needles", "ruler"], help="default: the setting's"
    )
    parser.add_argument("--ruler-samples", type=int, default=100, help="RULER samples per task and length")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="packed rows and RULER samples, shared by the runs of one machine (default: --work)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the row order (data.seed); a second seed: its own --work")
    parser.add_argument(
        "--variant",
        default=None,
        help="a name for a change to the recipes (e.g. fp8): its trained modes' results are MODE-VARIANT",
    )
    parser.add_argument(
        "--fit-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an override appended to every fit, repeatable (e.g. --fit-arg=--model.float8=tensorwise); "
        "needs --variant, so that its results are not taken for the recipe's",
    )
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at toy sizes")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.fit_arg and not args.variant:
        parser.error("--fit-arg changes the recipe: name the change with --variant (its results: MODE-VARIANT)")
    if args.variant and not args.variant.replace("_", "").isalnum():
        parser.error(f"--variant {args.variant!r}: letters, digits and _ only (it names results folders)")
    runner = Runner(args)
    try:
        complete = runner.run()
    finally:
        runner.bundle()
    return 0 if complete else 3


if __name__ == "__main__":
    sys.exit(main())
