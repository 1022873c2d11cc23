"""The users' tools in scripts/: a comparison of nothing is never a match, and a missing run is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True)


def trace(directory: Path, losses: dict[int, float], rows: list[int] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": s, "hash": "h", "rows": rows or [s], "loss": loss}) for s, loss in losses.items()]
    (directory / "trace-rank0.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def test_compare_traces_matches_equal_runs_and_names_every_kind_of_mismatch(tmp_path):
    reference = trace(tmp_path / "reference", {0: 2.0, 1: 1.5, 2: 1.2})
    done = tool("compare_traces.py", str(reference), str(trace(tmp_path / "same", {0: 2.0, 1: 1.5, 2: 1.2})))
    assert done.returncode == 0 and done.stdout.splitlines()[-1].startswith("MATCH"), done.stdout
    for name, other in {
        "loss": trace(tmp_path / "loss", {0: 2.0, 1: 1.6, 2: 1.2}),
        "rows": trace(tmp_path / "rows", {0: 2.0, 1: 1.5, 2: 1.2}, rows=[7]),
        "missing": trace(tmp_path / "missing", {0: 2.0, 1: 1.5}),  # stopped before step 2
    }.items():
        done = tool("compare_traces.py", str(reference), str(other))
        assert done.returncode == 1 and done.stdout.splitlines()[-1].startswith("MISMATCH"), (name, done.stdout)
    assert "missing !" in done.stdout


def test_compare_traces_of_a_directory_without_traces_is_an_error_not_a_match(tmp_path):
    (tmp_path / "empty").mkdir()
    done = tool("compare_traces.py", str(tmp_path / "empty"), str(tmp_path / "empty"))
    assert done.returncode == 2 and "MATCH" not in done.stdout
    assert (
        done.stderr.strip()
        == f"error: {tmp_path / 'empty'}: no trace-rank*.jsonl (StepTrace writes them: callbacks/trace.py)"
    )


def test_summarize_run_reads_a_runs_scalars_and_says_what_it_lacks(tmp_path, monkeypatch, capsys):
    import runpy

    from torch.utils.tensorboard import SummaryWriter

    def summarize(where: Path) -> int:
        monkeypatch.setattr(sys, "argv", ["summarize_run.py", str(where)])
        try:
            runpy.run_path(str(ROOT / "scripts" / "summarize_run.py"), run_name="__main__")
        except SystemExit as stop:
            return int(stop.code)
        return 0

    writer = SummaryWriter(str(tmp_path / "run"))
    for step, loss in enumerate([3.0, 2.0, 1.0]):
        writer.add_scalar("train/loss", loss, step)
    writer.add_scalar("val/loss", 1.5, 2)
    writer.close()
    assert summarize(tmp_path / "run") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "train/loss" in lines[0] and "last 1  median(last 3) 2" in lines[0], lines
    assert "val/loss" in lines[1] and "last 1.5" in lines[1]
    assert lines[-1].endswith(
        "not logged: perf/tokens_per_sec, perf/tokens_per_sec_per_device, perf/mfu, memory/peak_gib"
    )
    (tmp_path / "empty-run").mkdir()
    for where, message in [
        (tmp_path / "none", "no such directory"),
        (tmp_path / "empty-run", "no TensorBoard scalars"),
    ]:
        assert summarize(where) == 2
        assert capsys.readouterr().err.startswith(f"error: {where}: {message}")
