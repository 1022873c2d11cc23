"""The README's first walk, line by line, as a newcomer runs it: each command a real process in a fresh
directory, each using the previous one's output. The first ``fit`` is interrupted at step 40 as a
Ctrl-C would (SIGINT), so that the second line really resumes."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def walk_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- walk:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("  #", 1)[0]) for line in block.strip().splitlines()]


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert argv[0] == "anchor-lightning"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "anchor_lightning", *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_the_readme_walk(tmp_path):
    commands = walk_commands()
    assert [c[1] for c in commands] == ["fit", "fit", "export", "evaluate", "evaluate", "diagnose", "inspect"]
    interrupted = [
        *commands[0],
        "--trainer.callbacks+=tests.helpers.SignalAtStep",
        "--trainer.callbacks.step=40",
        "--trainer.callbacks.signum=2",
    ]
    env_root = str(ROOT)
    first = subprocess.run(
        [sys.executable, "-m", "anchor_lightning", *interrupted[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": env_root},
    )
    assert first.returncode == 0, first.stderr[-2000:]
    stopped = re.search(r"saving \S+ after step (\d+) and stopping", first.stdout)
    assert stopped and 40 <= int(stopped.group(1)) < 80, first.stdout[-2000:]
    checkpoint = tmp_path / "checkpoints" / "tiny-cpu" / "anchor-sdpa-512" / "last.ckpt"
    assert checkpoint.is_file()
    outputs = {}
    for argv in commands[1:]:
        result = run(argv, tmp_path)
        assert result.returncode == 0, (argv, result.stderr[-3000:])
        outputs[argv[1] if argv[1] not in outputs else f"{argv[1]}2"] = result.stdout
    assert f"resumed at step {stopped.group(1)}" in outputs["fit"] and "done: step 80" in outputs["fit"], outputs["fit"]
    exported = tmp_path / "exported" / "tiny-cpu"
    assert (exported / "model.safetensors").is_file() and (exported / "ANCHOR.md").is_file()
    results = json.loads((tmp_path / "eval" / "tiny-cpu" / "long_context.json").read_text())
    assert set(results["niah"]) == {"single", "multikey", "multivalue"} and results["perplexity_by_position"]
    ruler = json.loads((tmp_path / "eval" / "tiny-cpu" / "ruler.json").read_text())
    assert set(ruler["scores"]["2048"]["tasks"]) == {"niah_single_1", "niah_multikey_3", "fwe"}
    assert "average" in outputs["evaluate2"] and (tmp_path / "eval" / "tiny-cpu" / "ruler_heatmap.png").is_file()
    assert (tmp_path / "diagnose" / "tiny-cpu" / "rope_deviation.json").is_file()
    assert "attention mask" in outputs["inspect"]
    assert not (tmp_path / "config.yaml").exists()  # nothing written outside the run's own directories
