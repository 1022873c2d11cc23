"""Bad input: one line naming the file, line and field; exit status 2; no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anchor_lightning.commands import main
from tests.conftest import LLAMA2_TOKENIZER, SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
MICRO = str(ROOT / "tests" / "configs" / "micro.yaml")


def run_cli(capsys, tmp_path, *overrides: str) -> str:
    """Run ``fit`` in-process; return the single error line (asserting there is exactly one)."""
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                MICRO,
                f"--data.cache_dir={tmp_path / 'cache'}",
                f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
                *overrides,
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_missing_file(capsys, tmp_path):
    line = run_cli(capsys, tmp_path, f"--data.train={tmp_path / 'nope.jsonl'}")
    assert f"{tmp_path / 'nope.jsonl'}: no such file" in line


def test_malformed_json_line(capsys, tmp_path):
    path = write(tmp_path / "bad.jsonl", ['{"text": "fine"}', '{"text": "broken', '{"text": "fine"}'])
    line = run_cli(capsys, tmp_path, f"--data.train={path}")
    assert f"{path}:2: malformed JSON" in line


def test_missing_text_field(capsys, tmp_path):
    path = write(tmp_path / "t.jsonl", ['{"text": "a"}', '{"text": "b"}', '{"content": "c"}'])
    line = run_cli(capsys, tmp_path, f"--data.train={path}")
    assert f"{path}:3: field 'text': missing" in line


def test_text_field_of_the_wrong_type(capsys, tmp_path):
    path = write(tmp_path / "t.jsonl", ['{"text": "a"}', '{"text": 7}'])
    line = run_cli(capsys, tmp_path, f"--data.train={path}")
    assert f"{path}:2: field 'text': not a string (int)" in line


def test_missing_input_ids_in_pre_tokenized_data(capsys, tmp_path):
    path = write(tmp_path / "t.jsonl", [json.dumps({"input_ids": [256, 5, 6, 257]}), json.dumps({"source": []})])
    line = run_cli(capsys, tmp_path, f"--data.train={path}")
    assert f"{path}:2: field 'input_ids': missing" in line


def test_source_entries_out_of_range(capsys, tmp_path):
    path = write(tmp_path / "t.jsonl", [json.dumps({"input_ids": [256, 5, 6, 257], "source": [{"end": 9}]})])
    line = run_cli(capsys, tmp_path, f"--data.train={path}")
    assert f"{path}:1: field 'source'" in line


def test_empty_data_set(capsys, tmp_path):
    path = write(tmp_path / "empty.jsonl", [])
    line = run_cli(capsys, tmp_path, f"--data.train={path}")
    assert f"{path}: the data set is empty" in line


def test_tokenizer_without_bos_and_no_anchor_id(capsys, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "alpha": 1, "beta": 2, "</s>": 3}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="</s>").save_pretrained(
        tmp_path / "tok"
    )
    data = write(tmp_path / "t.jsonl", ['{"text": "alpha beta"}'] * 40)
    line = run_cli(capsys, tmp_path, f"--data.train={data}", f"--data.tokenizer={tmp_path / 'tok'}")
    assert "field 'data.anchor_id'" in line and "no BOS" in line


def test_anchor_id_outside_the_vocabulary(capsys, tmp_path):
    line = run_cli(capsys, tmp_path, "--data.anchor_id=5000")
    assert "field 'data.anchor_id'" in line and "anchor id 5000 is outside the vocabulary (size 258)" in line


@pytest.mark.skipif(not LLAMA2_TOKENIZER.is_file(), reason=f"needs {LLAMA2_TOKENIZER}")
def test_tokenizer_larger_than_the_model_embedding(capsys, tmp_path):
    (tmp_path / "llama").mkdir()
    shutil.copy(SHARED_DATA / "llama2-tokenizer.model", tmp_path / "llama" / "tokenizer.model")
    data = write(tmp_path / "t.jsonl", ['{"text": "Hello world, this is a document."}'] * 60)
    line = run_cli(capsys, tmp_path, f"--data.train={data}", f"--data.tokenizer={tmp_path / 'llama'}")
    assert "vocabulary (32000) is larger than the model's embedding (258)" in line


def test_row_length_too_small(capsys, tmp_path):
    line = run_cli(capsys, tmp_path, "--seq_len=2")
    assert "field 'seq_len'" in line and "row length 2 is too small" in line


@pytest.mark.parametrize(
    "override,expected",
    [
        ("--model.mode=anchr", 'command line: Parser key "model.mode"'),
        ("--model.backend=flash", 'command line: Parser key "model.backend"'),
        ("--model.config.model_type=gpt2", "unsupported architecture 'gpt2'"),
    ],
)
def test_unknown_mode_backend_architecture(capsys, tmp_path, override, expected):
    assert expected in run_cli(capsys, tmp_path, override)


def test_bad_value_in_a_config_file_names_the_file(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(MICRO).read_text().replace("backend: sdpa", "backend: flashy"))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(bad)])
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: {bad}: Parser key "model.backend"') and "\n" not in err


@pytest.mark.slow
@pytest.mark.parametrize("override", ["--data.train=/nonexistent/data.jsonl", "--model.mode=anchr"])
def test_as_a_user_sees_it(tmp_path, override):
    """The real process: exit status 2, one error line, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "anchor_lightning", "fit", "--config", MICRO, override, f"--data.cache_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        result.stderr.strip().splitlines()[-1]
    ]
