"""What the one-card and the several-card benchmarks share: the default model shape, the process
runner, the MFU/memory table cells and the row-length grid of the longest-row probe."""

from __future__ import annotations

import json
import os
import subprocess

# the benchmark's default shape (a 1B-class Llama): Llama, hidden 2048, 16 layers, 32 heads, 8 KV heads, FFN 8192, vocab 32000
SHAPE = {"hidden_size": 2048, "intermediate_size": 8192, "layers": 16, "heads": 32, "kv_heads": 8, "vocab_size": 32000}


def run_process(command: list[str], spec: dict, timeout: int, **env: str) -> dict:
    """Run a benchmark process; its last JSON line, or ``spec`` with the error (out of memory, the last
    error line, or the exit status)."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
        )
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout} s"}
    results = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and results:
        return json.loads(results[-1])
    if "OutOfMemoryError" in done.stderr or "CUDA out of memory" in done.stderr:
        return {**spec, "error": "out of memory"}
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if "Error" in line] or lines[-1:]
    return {**spec, "error": (errors[-1] if errors else f"exit {done.returncode}")[:300]}


def mfu_and_peak(result: dict) -> tuple[str, str]:
    """The table cells for MFU and peak memory ("-" where unknown, e.g. on CPU)."""
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "-"
    peak = f"{result['peak_gib']:.1f}" if result["peak_gib"] is not None else "-"
    return mfu, peak


def grid(start: int, limit: int) -> list[int]:
    """Powers of two and their midpoints (``1.5 x 2^k``), from ``start`` up to ``limit``."""
    rows, length = [], 1 << max(0, (start - 1).bit_length() - 1)
    while length <= limit:
        rows += [r for r in (length, length * 3 // 2) if start <= r <= limit]
        length *= 2
    return rows
