"""lab/miniature: the order and time budget of run.py's steps (its commands stood in for, on a fake
clock) and gpu_call.sh's background run, watched over several calls (a stand-in for run.py)."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.helpers import script_env

ROOT = Path(__file__).resolve().parents[2]


def load_run_module():
    spec = importlib.util.spec_from_file_location("miniature_run", ROOT / "lab" / "miniature" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


SECONDS = {"fit": 150.0, "export": 10.0, "evaluate": 200.0, "diagnose": 20.0}


def make_runner(module, tmp_path: Path, clock: FakeClock, deadline: float, calls: list[str], **extra):
    args = argparse.Namespace(
        gguf=tmp_path / "model.gguf",
        data=tmp_path / "data",
        work=tmp_path / "work",
        out=tmp_path / "out",
        deadline=deadline,
        keep_checkpoints=False,
        modes=extra.pop("modes", list(module.MODES)),
        models=extra.pop("models", list(module.EVALUATED)),
        parallel=extra.pop("parallel", 2),
        eval_seconds=extra.pop("eval_seconds", 240.0),
        dry_run=False,
        setting=extra.pop("setting", "long-32k"),
        mix_data=tmp_path / "mix",
        suites=extra.pop("suites", None),
        ruler_samples=100,
        seed=0,
        evaluate_after=extra.pop("evaluate_after", None),
    )
    runner = module.Runner(args)
    runner.environment = lambda: None

    def command(name, argv, stop_at=None):
        calls.append(name)
        clock.now += SECONDS[argv[0]]  # evaluations in threads add up: the order is what is checked here
        return 0, SECONDS[argv[0]], False

    runner.command = command
    return runner


@pytest.fixture
def module(monkeypatch):
    module = load_run_module()
    clock = FakeClock()
    monkeypatch.setattr(module, "time", clock)
    module.clock = clock
    return module


def test_trained_modes_are_evaluated_as_soon_as_a_pair_is_exported(module, tmp_path):
    calls: list[str] = []
    runner = make_runner(module, tmp_path, module.clock, float("inf"), calls)
    assert runner.run()
    phases = [
        ["train-anchor", "export-anchor", "train-full", "export-full"],
        {"eval-anchor", "diagnose-anchor", "eval-full", "diagnose-full"},
        ["train-intra_doc", "export-intra_doc", "train-intra_doc_reset", "export-intra_doc_reset"],
        {"eval-intra_doc_reset", "diagnose-intra_doc_reset", "eval-intra_doc", "diagnose-intra_doc"},
        {"eval-base", "diagnose-base", "eval-base-theta", "diagnose-base-theta"},
    ]
    at = 0
    for phase in phases:
        got = calls[at : at + len(phase)]
        assert (set(got) if isinstance(phase, set) else got) == phase, calls
        at += len(phase)
    assert at == len(calls)
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    assert set(state["done"]) == {f"{s}-{m}" for s in ("train", "export") for m in module.MODES} | {
        f"eval-{n}" for n in module.EVALUATED
    }
    with tarfile.open(tmp_path / "out" / "miniature-results.tar.gz") as tar:
        assert "results/state.json" in tar.getnames()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_a_deadline_trains_on_when_an_evaluation_does_not_fit_and_the_next_call_evaluates(module, tmp_path):
    calls: list[str] = []
    # two trainings and exports take 320 s; a pair of evaluations is guessed at 1.5 x 500 s: not in 1000 s
    runner = make_runner(module, tmp_path, module.clock, 1000.0, calls, eval_seconds=500.0)
    assert not runner.run()
    assert calls == [f"{s}-{m}" for m in module.MODES for s in ("train", "export")]
    later: list[str] = []
    module.clock.now = 0.0
    runner = make_runner(module, tmp_path, module.clock, 2000.0, later, eval_seconds=500.0)
    assert runner.run()
    assert not [c for c in later if c.startswith(("train", "export"))]  # nothing trained twice
    assert {c for c in later if c.startswith("eval-")} == {f"eval-{n}" for n in module.EVALUATED}


def test_an_evaluation_that_fails_stops_the_run_before_more_training(module, tmp_path, capsys):
    calls: list[str] = []
    runner = make_runner(module, tmp_path, module.clock, float("inf"), calls)
    command = runner.command

    def failing(name, argv, stop_at=None):
        code, seconds, stopped = command(name, argv, stop_at)
        return (1 if name == "eval-full" else code), seconds, stopped

    runner.command = failing
    assert not runner.run()
    assert "train-intra_doc" not in calls
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    assert "eval-anchor" in state["done"] and "eval-full" not in state["done"]
    last = capsys.readouterr().out.splitlines()[-1]  # what stopped the run, the steps done named as done
    assert last.endswith(f"stopped (steps done: {', '.join(state['done'])}); run again to continue"), last


STAND_IN = """
import os, sys, time, tarfile, pathlib
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--out") + 1])
print(f"on gpu {os.environ.get('CUDA_VISIBLE_DEVICES', 'any')}", flush=True)
for step in range(3):
    print(f"step {step} of the stand-in, args {' '.join(args[args.index('--out') + 2:])}", flush=True)
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / "step").write_text(str(step))
    with tarfile.open(out / "partial.tar.gz", "w:gz") as tar:
        tar.add(out / "results", arcname="results")
    (out / "partial.tar.gz").replace(out / "miniature-results.tar.gz")
    time.sleep(2.5)
sys.exit(3)
"""


def staged_machine(tmp_path: Path) -> None:
    """A machine with the GGUF and the data staged, and the stand-in for run.py."""
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text("{}")


def gpu_call(tmp_path: Path, *argv: str, watch: int, **extra: str) -> subprocess.CompletedProcess:
    out = tmp_path / f"out-{time.monotonic_ns()}"
    out.mkdir()
    env = script_env(
        tmp_path,
        out,
        WORK="work",
        GGUF="model.gguf",
        DATA="data",
        SITE="site",
        WHEELS="wheels",
        CARRY="carry",
        PIECES="pieces",
        RUN_PY="stand_in.py",
    )
    env["WATCH"] = str(watch)
    env.update(extra)
    env["PYTHON"] = sys.executable  # keep.py's, with torch
    result = subprocess.run(
        ["bash", str(ROOT / "lab" / "miniature" / "gpu_call.sh"), *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    result.out = out
    return result


@pytest.mark.slow  # background processes across calls, with their waits
def test_gpu_call_runs_in_the_background_across_calls_and_brings_the_bundle_back(tmp_path):
    staged_machine(tmp_path)
    first = gpu_call(tmp_path, "start", "--models", "anchor", watch=4)  # room for step 0 under load
    assert first.returncode == 10, first.stdout + first.stderr  # still running when the call returned
    assert "started in the background" in first.stdout
    assert "step 0 of the stand-in, args --models anchor" in first.stdout
    assert (first.out / "miniature-results.tar.gz").is_file()
    # a second start only watches; every line the run logged is shown by exactly one call
    second = gpu_call(tmp_path, "start", watch=30)
    assert second.returncode == 3, second.stdout + second.stderr  # the stand-in's exit code
    assert "the run was started on this machine before" in second.stdout
    shown = first.stdout + second.stdout
    assert [shown.count(f"step {i} of the stand-in") for i in range(3)] == [1, 1, 1], shown
    with tarfile.open(second.out / "miniature-results.tar.gz") as tar:
        assert tar.extractfile("results/step").read() == b"2"
    assert "step 2 of the stand-in" in (second.out / "run.log").read_text()
    # the run's code is a copy: later calls may replace the working tree under it
    assert (tmp_path / "work" / "code" / "anchor_lightning" / "__init__.py").is_file()
    assert gpu_call(tmp_path, "bogus", watch=1).returncode == 2


@pytest.mark.slow  # background processes across calls, with their waits
def test_gpu_call_one_runs_each_model_in_its_own_folder_so_a_second_call_starts_a_new_run(tmp_path):
    staged_machine(tmp_path)
    anchor = gpu_call(tmp_path, "one", "anchor", watch=4)  # room for step 0 under load
    assert anchor.returncode == 10, anchor.stdout + anchor.stderr
    assert "step 0 of the stand-in, args --modes anchor --models anchor --parallel 1" in anchor.stdout
    base = gpu_call(tmp_path, "one", "base", watch=4)  # a new run beside the anchor one
    assert base.returncode == 10 and "started in the background" in base.stdout, base.stdout + base.stderr
    assert "args --modes --models base --parallel 1" in base.stdout
    assert (tmp_path / "work-anchor" / "run.pid").is_file() and (tmp_path / "work-base" / "run.pid").is_file()
    watched = gpu_call(tmp_path, "watch", "base", watch=30)
    assert watched.returncode == 3 and "step 2 of the stand-in, args --modes --models base" in watched.stdout
    again = gpu_call(tmp_path, "one", "anchor", watch=30)  # the same model again only watches its run
    assert again.returncode == 3 and "the run was started on this machine before" in again.stdout
    other = gpu_call(tmp_path, "one", "anchor", "--seed", "1", watch=1)  # another run: not this folder's
    assert other.returncode == 2 and "holds a run started with other arguments ()" in other.stdout, other.stdout
    assert gpu_call(tmp_path, "one", "bogus", watch=1).returncode == 2
    assert gpu_call(tmp_path, "one", watch=1).returncode == 2


@pytest.mark.slow  # background processes across calls, with their waits
def test_gpu_call_again_starts_a_stopped_run_again_and_its_log_goes_on(tmp_path):
    staged_machine(tmp_path)
    first = gpu_call(tmp_path, "one", "anchor", watch=30)
    assert first.returncode == 3, first.stdout + first.stderr  # the stand-in stops with "steps left"
    watched = gpu_call(tmp_path, "one", "anchor", watch=5)  # without AGAIN: said, and only watched
    assert watched.returncode == 3 and "AGAIN=1 starts it again" in watched.stdout, watched.stdout
    assert "started in the background" not in watched.stdout
    again = gpu_call(tmp_path, "one", "anchor", watch=30, AGAIN="1")
    assert again.returncode == 3 and "starting it again (its log goes on)" in again.stdout, again.stdout
    assert "started in the background" in again.stdout
    assert again.stdout.count("step 0 of the stand-in") == 1  # the call shows what this launch logged
    log = (again.out / "run.log").read_text()
    assert log.count("step 2 of the stand-in") == 2, log  # and the log keeps both launches'


@pytest.mark.slow  # background processes across calls, with their waits
def test_gpu_call_each_runs_one_model_per_gpu_and_watches_them_together(tmp_path):
    staged_machine(tmp_path)
    first = gpu_call(tmp_path, "each", "anchor", "full", "--", "--seed", "1", watch=6, GPUS="2")  # room under load
    assert first.returncode == 10, first.stdout + first.stderr  # still running when the call returned
    for gpu, model in enumerate(("anchor", "full")):
        assert f"[{model}] on gpu {gpu}" in first.stdout, first.stdout
        assert (
            f"[{model}] step 0 of the stand-in, args --modes {model} --models {model} --parallel 1 --seed 1"
            in first.stdout
        )
        assert (first.out / model / "miniature-results.tar.gz").is_file()  # each run's files in its own folder
    assert "[each] exit codes: anchor " in first.stdout and " full 10" in first.stdout
    # the next call (the same arguments) finds both started and watches them to their end
    second = gpu_call(tmp_path, "each", "anchor", "full", "--", "--seed", "1", watch=30, GPUS="2")
    assert second.returncode == 3, second.stdout + second.stderr  # the stand-in's exit code, from both
    shown = first.stdout + second.stdout
    for model in ("anchor", "full"):
        assert [shown.count(f"[{model}] step {i} of the stand-in") for i in range(3)] == [1, 1, 1], shown
        with tarfile.open(second.out / model / "miniature-results.tar.gz") as tar:
            assert tar.extractfile("results/step").read() == b"2"
    # a later `one` continues the same run: `each` and `one` name runs alike
    assert gpu_call(tmp_path, "one", "full", "--seed", "1", watch=5).returncode == 3
    many = gpu_call(tmp_path, "each", "anchor", "full", "intra_doc", watch=1, GPUS="2")
    assert many.returncode == 2 and "3 model(s) for 2 GPU(s)" in many.stdout
    assert not (tmp_path / "work-intra_doc").exists()


@pytest.mark.slow  # background processes across calls, with their waits
def test_gpu_call_each_puts_per_gpu_runs_on_one_card(tmp_path):
    staged_machine(tmp_path)
    shared = gpu_call(tmp_path, "each", "anchor", "full", watch=30, GPUS="1", PER_GPU="2")
    assert shared.returncode == 3, shared.stdout + shared.stderr  # both ran to the stand-in's end
    for model in ("anchor", "full"):
        assert f"[{model}] on gpu 0" in shared.stdout, shared.stdout
        assert (shared.out / model / "miniature-results.tar.gz").is_file()
    third = gpu_call(tmp_path, "each", "anchor", "full", "intra_doc", watch=1, GPUS="1", PER_GPU="2")
    assert third.returncode == 2 and "3 model(s) for 1 GPU(s): name 2 model(s) per GPU at most" in third.stdout


def test_evaluations_wait_for_the_file_that_says_a_sharing_training_holds_its_memory(module, tmp_path, capsys):
    gate = tmp_path / "go"
    calls: list[str] = []
    runner = make_runner(
        module,
        tmp_path,
        module.clock,
        float("inf"),
        calls,
        modes=["anchor"],
        models=["anchor"],
        parallel=1,
        evaluate_after=gate,
    )
    waited: list[float] = []

    def sleep(seconds: float) -> None:  # the training beside it reaches its peak after 30 s of waiting
        module.clock.now += seconds
        waited.append(seconds)
        if sum(waited) >= 30:
            gate.touch()
            calls.append("gate")

    module.clock.sleep = sleep
    assert runner.run()
    assert calls == ["train-anchor", "export-anchor", "gate", "eval-anchor", "diagnose-anchor"]
    assert f"waiting for {gate} before evaluating" in capsys.readouterr().out
    waited.clear()
    again = make_runner(
        module, tmp_path, module.clock, float("inf"), [], modes=[], models=["base"], parallel=1, evaluate_after=gate
    )
    assert again.run() and not waited  # the file is there: no wait


def test_no_modes_evaluates_only_and_one_evaluation_at_a_time_is_the_default(module, tmp_path):
    calls: list[str] = []
    runner = make_runner(module, tmp_path, module.clock, float("inf"), calls, modes=[], models=["base"], parallel=1)
    assert runner.run()
    assert calls == ["eval-base", "diagnose-base"]
    args = module.build_parser().parse_args(["--gguf", "m.gguf", "--work", "w", "--modes", "--models", "base"])
    assert args.modes == [] and args.models == ["base"] and args.parallel == 1


@pytest.mark.slow  # a pytest run in the background, across calls
def test_gpu_call_tests_runs_the_gpu_tests_in_the_background_from_a_copy_of_the_tree(tmp_path):
    """`tests` beside a run: the GPU tests (all skipped on this CPU) from a copy of the tree in
    $WORK-tests, their log brought back by `watch tests`; without the wheels, one line and exit 4."""
    quiet = {"ANCHOR_REQUIRE_SHARED": "0"}  # the copy has no ../shared beside it (CI sets 1)
    bare = gpu_call(tmp_path, "tests", watch=1, **quiet)
    assert bare.returncode == 4 and "no wheels installed" in bare.stdout, bare.stdout + bare.stderr
    (tmp_path / "site").mkdir()
    started = gpu_call(tmp_path, "tests", "tests/gpu/test_generation_gpu.py", watch=50, **quiet)
    assert started.returncode == 0, started.stdout + started.stderr  # pytest's own exit code
    assert "started in the background" in started.stdout and "-m pytest" in started.stdout
    log = (started.out / "run.log").read_text()
    tests = (ROOT / "tests" / "gpu" / "test_generation_gpu.py").read_text().count("\ndef test_")
    assert f"\n{tests} skipped in " in log, log  # every test of the file ran (and skipped: no GPU here)
    assert (tmp_path / "work-tests" / "code" / "tests" / "gpu" / "test_generation_gpu.py").is_file()
    assert (tmp_path / "work-tests" / "code" / "pyproject.toml").is_file()
    again = gpu_call(tmp_path, "tests", watch=5, **quiet)  # a second call only watches them
    assert again.returncode == 0 and "started on this machine before" in again.stdout, again.stdout
    watched = gpu_call(tmp_path, "watch", "tests", watch=5, **quiet)
    assert watched.returncode == 0 and (watched.out / "run.log").read_text() == log


def test_gpu_call_on_a_bare_machine_says_which_calls_to_make(tmp_path):
    result = gpu_call(tmp_path, "watch", watch=1)
    assert result.returncode == 4 and "stage and start again" in result.stdout
    result = gpu_call(tmp_path, "start", watch=1)  # no GGUF pieces here
    assert result.returncode == 4 and "stage both pieces of the GGUF first" in result.stdout


def test_what_does_not_fit_one_call_is_staged_over_several(tmp_path):
    """The GGUF's two pieces and the data each come in a call of their own (64 MiB a call): the pieces
    are joined and checked against the carried sha256 once a run starts, the data unpacked."""
    gguf = bytes(range(256)) * 1000
    for part, piece in (("1", gguf[:100_000]), ("2", gguf[100_000:])):
        folder = tmp_path / "carry" / "smollm2" / part
        folder.mkdir(parents=True)
        (folder / f"smollm2.part.0{int(part) - 1}").write_bytes(piece)
    (tmp_path / "carry" / "smollm2" / "2" / "sha256").write_text(hashlib.sha256(gguf).hexdigest() + "\n")
    (tmp_path / "pieces").mkdir()
    second = tmp_path / "carry" / "smollm2" / "2"
    second.rename(tmp_path / "later")  # call 1 carries only the first piece
    first = gpu_call(tmp_path, "stage", watch=1)
    assert first.returncode == 0 and "staged smollm2.part.00" in first.stdout, first.stdout + first.stderr
    shutil.rmtree(tmp_path / "carry" / "smollm2" / "1")  # call 2: only the second piece
    (tmp_path / "later").rename(second)
    assert "staged smollm2.part.01" in gpu_call(tmp_path, "stage", watch=1).stdout
    shutil.rmtree(second)
    no_data = gpu_call(tmp_path, "one", "anchor", watch=1)  # a run without the data: said, nothing runs
    assert no_data.returncode == 6 and "no data: carry" in no_data.stdout
    assert (tmp_path / "model.gguf").read_bytes() == gguf  # joined and checked already
    minidata = tmp_path / "carry" / "minidata"
    minidata.mkdir(parents=True)
    (minidata / "manifest.json").write_text("{}")
    (minidata / "val.jsonl.xz").write_bytes(lzma.compress(b'{"text": "a"}\n'))
    staged = gpu_call(tmp_path, "stage", watch=1)  # call 3 carries the data
    assert staged.returncode == 0 and "unpacked" in staged.stdout, staged.stdout + staged.stderr
    assert (tmp_path / "data" / "val.jsonl").read_bytes() == b'{"text": "a"}\n'


def test_report_fills_in_earlier_results_of_the_same_tasks_and_says_where_they_came_from():
    spec = importlib.util.spec_from_file_location("miniature_report", ROOT / "lab" / "miniature" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    found = {"anchor": {"eval": {"niah_version": 2}, "train": {"steps": 100}}, "base": {"diag": {"d": 0}}}
    earlier = {
        "anchor": {"eval": {"niah_version": 2}, "diag": {"d": 1}},  # another trained model: nothing taken
        "full": {"eval": {"niah_version": 1}, "train": {"steps": 100}},  # whole, less the other tasks
        "base": {"eval": {"niah_version": 2}, "diag": {"d": 2}},  # the same weights: what is missing
        "base-theta": {"eval": {"niah_version": 1}},  # other needle tasks: left out
        "intra_doc": {"eval": {"niah_version": 2, "niah": {"single": {"by_length": {"512": {}}}}}},  # other lengths
    }
    sources: dict = {}
    report.merge(found, earlier, "docs/miniature/2026-12-02", sources)
    assert found["anchor"] == {"eval": {"niah_version": 2}, "train": {"steps": 100}}
    assert found["full"] == {"train": {"steps": 100}}
    assert found["base"] == {"eval": {"niah_version": 2}, "diag": {"d": 0}}
    assert "base-theta" not in found and "intra_doc" not in found
    assert sources == {"full": {"train": "docs/miniature/2026-12-02"}, "base": {"eval": "docs/miniature/2026-12-02"}}
    header = report.tables({}, {"device": "NVIDIA H200"}, sources).splitlines()[0]
    assert "full (train) from `docs/miniature/2026-12-02`; base (eval) from" in header
    row = report.training_table(
        {
            "anchor": {
                "train": {
                    "steps": 2,
                    "tokens": 2048.0,
                    "tokens_per_sec_median": None,
                    "seconds_per_step_median": None,
                    "wall_seconds": 70.0,
                    "peak_gib": None,
                    "val_loss": 1.5,
                    "curves": {},
                }
            }
        }
    )
    assert row[-1] == "| anchor | 2 | 0.0M | - | - |  | 70 s | - | - | 1.500 |"  # a CPU dry run logs no rates


def write_results(folder: Path, models: dict[str, dict], environment: dict, state: dict) -> Path:
    for name, files in models.items():
        for relative, content in files.items():
            path = folder / name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content))
    (folder / "environment.json").write_text(json.dumps(environment))
    (folder / "state.json").write_text(json.dumps(state))
    return folder


def test_report_takes_one_run_from_several_calls_folders_and_keeps_every_models_raw(tmp_path):
    spec = importlib.util.spec_from_file_location("miniature_report", ROOT / "lab" / "miniature" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    environment = {"device": "NVIDIA H200"}
    first = write_results(
        tmp_path / "one-anchor",
        {"anchor": {"train.json": {"steps": 100}, "diagnose/rope_deviation.json": {"d": 1}}},
        environment,
        {"done": {"train-anchor": {"seconds": 160}}},
    )
    second = write_results(
        tmp_path / "one-full",
        {"full": {"train.json": {"steps": 99}}, "anchor": {"train.json": {"steps": 5}}},  # anchor: the first's
        environment,
        {"done": {"train-full": {"seconds": 217}}},
    )
    found, origin = report.combine([first, second])
    assert found["anchor"] == {"train": {"steps": 100}, "diag": {"d": 1}} and found["full"] == {"train": {"steps": 99}}
    assert origin == {"anchor": first, "full": second}
    assert report.run_state([first, second]) == {
        "done": {"train-anchor": {"seconds": 160}, "train-full": {"seconds": 217}}
    }
    assert report.run_environment([first, second]) == environment
    # a later call's model added to the raw folder of an earlier one: the earlier's files stay
    later = write_results(
        tmp_path / "one-reset",
        {"intra_doc_reset": {"train.json": {"steps": 98}}},
        environment,
        {"done": {"train-intra_doc_reset": {"seconds": 132}}},
    )
    found, origin = report.combine([first, later])
    report.keep_raw(origin, [first, later], first, environment)
    assert json.loads((first / "intra_doc_reset" / "train.json").read_text()) == {"steps": 98}
    assert json.loads((first / "anchor" / "train.json").read_text()) == {"steps": 100}
    assert report.load(first)["anchor"] == {"train": {"steps": 100}, "diag": {"d": 1}}
    assert set(json.loads((first / "state.json").read_text())["done"]) == {"train-anchor", "train-intra_doc_reset"}
    (second / "environment.json").write_text(json.dumps({"device": "NVIDIA H100"}))
    with pytest.raises(SystemExit, match="different versions or cards"):
        report.run_environment([first, second])
    with pytest.raises(SystemExit, match="no such results folder"):
        report.combine([tmp_path / "missing"])


def test_prepare_carry_splits_the_gguf_in_two_checked_pieces_and_compresses_the_split(tmp_path):
    import hashlib
    import lzma

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(bytes(range(256)) * 4)  # 1,024 bytes: two pieces of at most 600
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text('{"parts": {}}')
    (data / "train.jsonl").write_text('{"text": "a"}\n' * 50)
    script = ROOT / "lab" / "miniature" / "prepare_carry.sh"
    env = {**os.environ, "PIECE_BYTES": "600", "WHEELS": "0"}

    def prepare(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), *argv], cwd=tmp_path, env=env, capture_output=True, text=True)

    result = prepare(str(gguf), str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    first = (tmp_path / ".carry/smollm2/1/smollm2.part.00").read_bytes()
    second = (tmp_path / ".carry/smollm2/2/smollm2.part.01").read_bytes()
    assert len(first) == 600 and first + second == gguf.read_bytes()
    assert (tmp_path / ".carry/smollm2/2/sha256").read_text().strip() == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert (
        lzma.decompress((tmp_path / ".carry/minidata/train.jsonl.xz").read_bytes())
        == (data / "train.jsonl").read_bytes()
    )
    assert (tmp_path / ".carry/minidata/manifest.json").read_text() == '{"parts": {}}'
    assert "call 1 (piece) carries .carry/smollm2/1" in result.stdout
    env["NAME"] = "minimix"  # the short-document mix travels under its own name
    assert prepare(str(gguf), str(data)).returncode == 0
    assert (tmp_path / ".carry/minimix/manifest.json").is_file() and (tmp_path / ".carry/minidata").is_dir()
    del env["NAME"]
    assert prepare(str(tmp_path / "missing.gguf"), str(data)).returncode == 2
    assert prepare(str(gguf), str(tmp_path)).returncode == 2  # no manifest.json: not prepare_data.py's output
    env["PIECE_BYTES"] = "400"  # three pieces would be needed
    assert "more than two pieces" in prepare(str(gguf), str(data)).stdout


def test_the_mix_settings_train_one_recipe_per_mode_and_judge_by_ruler(module, tmp_path):
    seen: list[list[str]] = []
    runner = make_runner(
        module, tmp_path, module.clock, 10_000.0, [], setting="mix-64k", modes=["full"], models=["full"]
    )
    inner = runner.command
    runner.command = lambda name, argv, stop_at=None: (seen.append(argv), inner(name, argv, stop_at))[1]
    runner.write_train_summary = lambda mode: None
    assert runner.run()
    fit, export, ruler = seen
    assert fit[fit.index("--config") + 1].endswith("recipes/smollm2-135m/64k-mix.yaml") and "--model.mode=full" in fit
    assert export[export.index("--ckpt_path") + 1].endswith("checkpoints/smollm2-135m-mix/full-varlen-65536/last.ckpt")
    assert ruler[:3] == ["evaluate", "--suite", "ruler"]
    lengths = ruler[ruler.index("--lengths") + 1 : ruler.index("--samples")]
    assert lengths == ["4096", "8192", "16384", "32768", "65536"] and "--first_token" in ruler


def test_pieces_that_do_not_join_to_the_carried_checksum_are_refused(tmp_path):
    (tmp_path / "pieces").mkdir()
    (tmp_path / "pieces" / "smollm2.part.00").write_bytes(b"GG")
    (tmp_path / "pieces" / "smollm2.part.01").write_bytes(b"UF")
    (tmp_path / "pieces" / "smollm2.sha256").write_text(hashlib.sha256(b"GGUF!").hexdigest())
    result = gpu_call(tmp_path, "one", "anchor", watch=1)
    assert result.returncode == 5 and "GGUF checksum mismatch" in result.stdout
    assert not (tmp_path / "model.gguf").exists()


def test_the_training_summary_names_the_card(tmp_path):
    from lab.miniature import run

    (tmp_path / "runs" / "r").mkdir(parents=True)
    run.write_train_summary(tmp_path, "r", "anchor", [{"seconds": 12.5}])
    summary = json.loads((tmp_path / "results" / "anchor" / "train.json").read_text())
    assert summary["device"] == run.device_name() != "" and summary["wall_seconds"] == 12.5
    # a part that failed (here out of memory, before any checkpoint) is not the training's wall time
    run.write_train_summary(tmp_path, "r", "anchor", [{"seconds": 87.0, "exit": 1}, {"seconds": 247.0, "exit": 0}])
    summary = json.loads((tmp_path / "results" / "anchor" / "train.json").read_text())
    assert summary["wall_seconds"] == 247.0 and summary["failed_seconds"] == 87.0


def test_the_training_summary_records_the_rows_from_the_checkpoint(tmp_path):
    """run.py reads which rows a mode trained on from its last.ckpt: two modes on the same data and packing
    record the same rows, which the report shows as one digest; a mode without a checkpoint records none."""
    from lab.miniature import ruler_report, run
    from tests.test_export import fit_micro

    found = ruler_report.Gathered()
    for mode in ("anchor", "full"):
        (tmp_path / mode).mkdir()
        ckpt = fit_micro(tmp_path / mode, f"--model.mode={mode}", "--model.layout=per_doc", "--trainer.max_steps=2")
        rows = run.rows_identity(ckpt)
        assert rows is not None and rows["rows"] > 0 and rows["seed"] == 0 and rows["identity"]["packing"]["seq_len"]
        (tmp_path / mode / "runs" / "r").mkdir(parents=True)
        run.write_train_summary(tmp_path / mode, "r", mode, [{"seconds": 1.0}], rows=rows)
        found.train[mode] = json.loads((tmp_path / mode / "results" / mode / "train.json").read_text())
    assert found.train["anchor"]["rows"] == found.train["full"]["rows"]
    assert (
        ruler_report.rows_line(found)
        == f"Rows: full, anchor trained on the same rows (`{ruler_report.rows_digest(found.train['full'])}`)."
    )
    assert run.rows_identity(tmp_path / "missing.ckpt") is None
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    assert run.rows_identity(tmp_path / "broken.ckpt") is None  # said in the log; the summary is still written


def test_a_change_to_the_recipe_must_be_named(module, capsys):
    with pytest.raises(SystemExit):
        module.main(["--gguf", "m.gguf", "--work", "w", "--fit-arg=--model.float8=tensorwise"])
    assert "name the change with --variant" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module.main(["--gguf", "m.gguf", "--work", "w", "--variant", "fp-8", "--fit-arg=--model.float8=rowwise"])
    assert "letters, digits and _ only" in capsys.readouterr().err
    args = module.build_parser().parse_args(
        [
            "--gguf",
            "m.gguf",
            "--work",
            "w",
            "--variant",
            "fp8",
            "--fit-arg=--model.float8=tensorwise",
            "--fit-arg=--model.float8_layers=all",
        ]
    )
    assert module.Plan.from_args(args).fit_args == ("--model.float8=tensorwise", "--model.float8_layers=all")
