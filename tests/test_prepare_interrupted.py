"""kill -9 during ``prepare`` (while tokenizing, or while packing rows), then the same command again: it
completes, and its caches are byte-identical to those of a run never killed."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the real prepare command, with one writer wrapped to kill the process (SIGKILL: no cleanup of any kind)
# after it has taken some of its input: the tokenized documents or the packed rows
KILLER = """
import os, signal, sys
from anchor_lightning.data import pipeline
target, after = sys.argv.pop(1), int(sys.argv.pop(1))
holder, name = (pipeline.row_cache, "write_rows") if target == "rows" else (pipeline, "write_store")
original = getattr(holder, name)

def killing(directory, items, *args, **kwargs):
    def items_then_kill():
        for k, item in enumerate(items):
            if k == after:
                os.kill(os.getpid(), signal.SIGKILL)
            yield item
    return original(directory, items_then_kill(), *args, **kwargs)

setattr(holder, name, killing)
from anchor_lightning.commands import cli
sys.argv[0] = "anchor-lightning"
cli()
"""


def prepare(cache: Path, *before: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", KILLER, *before] if before else [sys.executable, "-m", "anchor_lightning"]
    args = ["prepare", "--config", "recipes/debug/tiny-cpu.yaml", f"--data.cache_dir={cache}", "--seq_len=256"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def files(cache: Path) -> dict[str, str]:
    """Every file of the caches (lock files aside) and its SHA-256."""
    return {
        str(p.relative_to(cache)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(cache.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.mark.slow
@pytest.mark.parametrize("target, after", [("store", 150), ("rows", 20)], ids=["while-tokenizing", "while-packing"])
def test_kill_9_during_prepare_then_the_same_command_gives_the_uninterrupted_caches(tmp_path, target, after):
    clean = prepare(tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    killed = prepare(tmp_path / "killed", target, str(after))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert files(tmp_path / "killed") != files(tmp_path / "clean"), "the kill came before the caches were whole"
    again = prepare(tmp_path / "killed")
    assert again.returncode == 0, again.stderr
    assert files(tmp_path / "killed") == files(tmp_path / "clean")
