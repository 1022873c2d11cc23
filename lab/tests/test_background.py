"""lab/gpu/background.sh (a long GPU job kept running across calls, its files brought back each call)
and lab/gpu/bench_call.sh (the throughput matrix through it), with stand-ins for the jobs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import script_env

ROOT = Path(__file__).resolve().parents[2]


def test_background_brings_back_every_finished_file_of_the_run_and_refuses_a_bad_call(tmp_path):
    script = ROOT / "lab" / "gpu" / "background.sh"
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "SITE": str(tmp_path / "site"), "WATCH": "30"}
    work = tmp_path / "work"
    job = (
        "import pathlib, os; o = pathlib.Path(os.environ['W']) / 'out'; "
        "(o / 'a.json').write_text('1'); (o / 'b.json').write_text('2'); (o / 'c.json.tmp').write_text('partial'); "
        "print('cwd', os.getcwd())"
    )
    result = subprocess.run(
        ["bash", str(script), "start", str(work), "--", sys.executable, "-c", job],
        cwd=ROOT,
        env={**env, "W": str(work)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"cwd {work / 'code'}" in result.stdout  # the run works in its copy of the code
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "b.json", "run.log"]
    bad = subprocess.run(["bash", str(script), "start", str(work), "python3"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stdout


BENCH_STAND_IN = """
out=$1; shift
echo "bench stand-in: KERNELS=$KERNELS parts=$* data=$(ls "$ANCHOR_SHARED_DATA")"
echo '{}' > "$out/32k.json"
"""


def test_gpu_bench_call_starts_the_matrix_in_the_background_with_its_documents(tmp_path):
    (tmp_path / "bench.sh").write_text(BENCH_STAND_IN)
    out = tmp_path / "out"
    out.mkdir()
    env = script_env(
        tmp_path, out, WORK="work", SITE="site", WHEELS="wheels", CARRY="carry", FA4="fa4", BENCH="bench.sh"
    )
    env["WATCH"] = "30"
    call = ["bash", str(ROOT / "lab" / "gpu" / "bench_call.sh"), "start", "32k", "64k"]
    missing = subprocess.run(call, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 6 and "carry .carry/bench" in missing.stdout
    (tmp_path / "carry" / "bench").mkdir(parents=True)
    (tmp_path / "carry" / "bench" / "wikitext2-valid.tokenized.jsonl").write_text("{}\n")
    result = subprocess.run(call, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "varlen kernels: auto; parts: 32k 64k" in result.stdout
    assert "bench stand-in: KERNELS=auto parts=32k 64k data=wikitext2-valid.tokenized.jsonl" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["32k.json", "run.log"]


def test_gpu_bench_runs_its_parts_in_the_order_given_and_refuses_an_unknown_one(tmp_path):
    """The matrix's parts run in the order asked for (the headline part first when a call may be cut
    short), each writing its own JSON; an unknown part stops it with exit 2."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "python"  # records the bench calls instead of running them
    stand_in.write_text('#!/usr/bin/env bash\necho "$*" >> "$CALLS"\n')
    stand_in.chmod(0o755)
    calls = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls), "ANCHOR_SHARED_DATA": "d"}
    script = str(ROOT / "lab" / "gpu" / "bench.sh")
    result = subprocess.run(
        ["bash", script, str(tmp_path / "o"), "64k", "32k"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert [line.split("--out ")[1] for line in lines] == [f"{tmp_path}/o/64k.json", f"{tmp_path}/o/32k.json"]
    calls.unlink()
    assert subprocess.run(["bash", script, str(tmp_path / "o"), "context-peer", "context"], env=env).returncode == 0
    outs = [line.split("--out ")[1].rsplit("/", 1)[1] for line in calls.read_text().splitlines()]
    assert outs == ["context-peer.json", "context-ours.json", "context-peer.json"]
    bad = subprocess.run(["bash", script, str(tmp_path / "o"), "bogus"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown part: bogus" in bad.stderr
