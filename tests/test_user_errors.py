"""A newcomer's mistakes, through the real commands: every one stops with one line (exit status 2, no
traceback), nothing is lost, and nothing of the user's is overwritten."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from anchor_lightning.commands import main
from anchor_lightning.errors import RunWarning
from tests.helpers import checkpoint_fragment

ROOT = Path(__file__).resolve().parents[1]
MICRO = str(ROOT / "tests" / "configs" / "micro.yaml")


def checkpointing(tmp_path: Path, directory: Path) -> str:
    """A fragment that saves last.ckpt to ``directory`` and logs under tmp_path."""
    return checkpoint_fragment(tmp_path, directory, logs=tmp_path / "runs")


def fit_args(tmp_path: Path, *more: str) -> list[str]:
    return [
        "fit",
        "--config",
        MICRO,
        f"--data.cache_dir={tmp_path / 'cache'}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        *more,
    ]


def one_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """last.ckpt of a 3-step anchor run."""
    tmp = tmp_path_factory.mktemp("trained")
    main([*fit_args(tmp), "--config", checkpointing(tmp, tmp / "ckpt"), "--trainer.max_steps=3"])
    return tmp / "ckpt" / "last.ckpt"


def broken_checkpoints(tmp_path: Path, trained: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(4096))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    return {"missing": tmp_path / "missing.ckpt", "truncated": truncated, "garbage": garbage, "foreign": foreign}


@pytest.mark.parametrize("kind", ["missing", "truncated", "garbage", "foreign"])
def test_a_bad_checkpoint_is_one_line_for_fit_validate_and_export(capsys, tmp_path, trained, kind):
    path = broken_checkpoints(tmp_path, trained)[kind]
    expected = {
        "missing": "no such checkpoint file",
        "truncated": "not a readable checkpoint",
        "garbage": "not a readable checkpoint",
        "foreign": "not a checkpoint written by anchor-lightning",
    }[kind]
    for argv in (
        fit_args(tmp_path, f"--ckpt_path={path}"),
        ["validate", *fit_args(tmp_path, f"--ckpt_path={path}")[1:]],
        ["export", "--ckpt_path", str(path), "--out", str(tmp_path / "hf")],
    ):
        line = one_error(capsys, argv)
        assert str(path) in line and expected in line, line


def test_resume_without_a_checkpoint_stops_unless_asked_to_resume_if_present(capsys, tmp_path):
    line = one_error(
        capsys, [*fit_args(tmp_path, "--ckpt_path=last"), "--config", checkpointing(tmp_path, tmp_path / "c")]
    )
    assert "nothing to resume" in line and str(tmp_path / "c" / "last.ckpt") in line
    main(
        [
            *fit_args(tmp_path, "--ckpt_path=last-if-present", "--trainer.max_steps=2"),
            "--config",
            checkpointing(tmp_path, tmp_path / "c"),
        ]
    )
    assert (tmp_path / "c" / "last.ckpt").is_file()  # no checkpoint: it trained from the start


def test_a_second_run_never_writes_into_another_runs_checkpoints(capsys, tmp_path, trained):
    before = trained.read_bytes()
    line = one_error(
        capsys,
        [
            *fit_args(tmp_path, "--model.mode=full", "--trainer.max_steps=3"),
            "--config",
            checkpointing(tmp_path, trained.parent),
        ],
    )
    assert "already holds checkpoints of another run" in line and "last.ckpt" in line
    assert trained.read_bytes() == before


@pytest.mark.parametrize(
    "override,what",
    [
        ("--model.mode=full", "mode: 'anchor' -> 'full'"),
        ("--model.config.hidden_size=32", "config.hidden_size: 64 -> 32"),
    ],
)
def test_resuming_under_other_settings_is_refused(capsys, tmp_path, trained, override, what):
    """Both packings give the same number of rows: only the settings tell the runs apart."""
    line = one_error(
        capsys,
        [
            *fit_args(tmp_path, override, "--ckpt_path=last", "--trainer.max_steps=6"),
            "--config",
            checkpointing(tmp_path, trained.parent),
        ],
    )
    assert "differ from this run's" in line and what in line, line


@pytest.mark.parametrize(
    "override, what",
    [
        ("--model.mode=full", "mode: 'anchor' -> 'full'"),
        ("--model.config.hidden_size=32", "config.hidden_size: 64 -> 32"),
        ("--model.rope_theta=50000", "rope_theta"),
    ],
)
def test_resuming_from_a_checkpoint_file_never_silently_takes_its_settings(capsys, tmp_path, trained, override, what):
    """Given a checkpoint's path (not ``last``), LightningCLI would replace the command line's model
    settings with the checkpoint's and train those: a changed setting must be refused instead."""
    line = one_error(
        capsys,
        [
            *fit_args(tmp_path, override, f"--ckpt_path={trained}", "--trainer.max_steps=6"),
            "--config",
            checkpointing(tmp_path, tmp_path / "elsewhere"),
        ],
    )
    assert "differ from this run's" in line and what in line, line


def test_validating_a_checkpoint_file_under_other_layers_is_refused(capsys, tmp_path, trained):
    line = one_error(
        capsys,
        ["validate", "--config", MICRO, f"--data.cache_dir={tmp_path / 'cache'}", "--model.config.num_hidden_layers=3",
         f"--ckpt_path={trained}", "--trainer.logger=false"],
    )  # fmt: skip
    assert "differ from this run's" in line and "num_hidden_layers: 2 -> 3" in line, line


def test_resuming_on_other_data_is_refused(capsys, tmp_path, trained):
    line = one_error(
        capsys,
        [
            *fit_args(tmp_path, "--data.train=default:300", "--ckpt_path=last", "--trainer.max_steps=6"),
            "--config",
            checkpointing(tmp_path, trained.parent),
        ],
    )
    assert "data settings differ" in line and "default-v1/300" in line


def test_a_users_config_yaml_is_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = "# my notes, not a Lightning config\nlr: 1\n"
    (tmp_path / "config.yaml").write_text(mine)
    main(
        [
            "fit",
            "--config",
            MICRO,
            f"--data.cache_dir={tmp_path / 'cache'}",
            "--trainer.logger=false",
            "--trainer.max_steps=2",
        ]
    )
    assert (tmp_path / "config.yaml").read_text() == mine


def test_the_resolved_config_is_saved_beside_the_logs(tmp_path):
    main([*fit_args(tmp_path, "--trainer.max_steps=2")])
    saved = next((tmp_path / "runs").rglob("config.yaml"))
    assert yaml.safe_load(saved.read_text())["trainer"]["max_steps"] == 2


@pytest.mark.parametrize("option", ["--data.cache_dir", "--trainer.logger.init_args.save_dir"])
def test_an_unwritable_output_directory_is_one_line_naming_it(capsys, tmp_path, option):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = one_error(capsys, [*fit_args(tmp_path), f"{option}={blocker / 'inside'}"])
    assert str(blocker) in line


def test_an_unwritable_export_directory_is_one_line(capsys, tmp_path, trained):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert str(blocker) in one_error(capsys, ["export", "--ckpt_path", str(trained), "--out", str(blocker / "hf")])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    line = one_error(capsys, ["export", "--ckpt_path", str(trained), "--out", str(tmp_path / "taken")])
    assert "not empty and not an earlier export" in line


@pytest.mark.parametrize(
    "ids,shown",
    [
        ([256, 2**32 + 5, 7], str(2**32 + 5)),
        ([256, True, 7], "true"),
        ([256, 10**20, 7], str(10**20)),
        ([256, -1, 7], "-1"),
        ([256, 1.5, 7], "1.5"),
    ],
)
def test_token_ids_are_checked_where_they_are_read(capsys, tmp_path, ids, shown):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"input_ids": [256, 5, 6]}) + "\n" + json.dumps({"input_ids": ids}) + "\n")
    line = one_error(capsys, fit_args(tmp_path, f"--data.train={path}"))
    assert f"{path}:2: field 'input_ids': token ids must be integers" in line and shown in line


def test_a_directory_or_an_unsupported_file_as_data_is_one_line(capsys, tmp_path):
    (tmp_path / "docs").mkdir()
    assert "not a saved datasets data set" in one_error(capsys, fit_args(tmp_path, f"--data.train={tmp_path / 'docs'}"))
    bzipped = tmp_path / "docs.jsonl.bz2"
    bzipped.write_bytes(b"BZh9")
    assert "unsupported format: bzip2-compressed" in one_error(capsys, fit_args(tmp_path, f"--data.train={bzipped}"))
    text = tmp_path / "docs.txt"
    text.write_text("a plain text file\n")
    assert "unsupported format: plain text files are not read (JSONL" in one_error(
        capsys, fit_args(tmp_path, f"--data.train={text}")
    )
    parquet = tmp_path / "docs.parquet"
    parquet.write_bytes(b"PAR1")
    assert "not a readable Parquet file" in one_error(capsys, fit_args(tmp_path, f"--data.train={parquet}"))
    broken = tmp_path / "docs.jsonl.gz"
    broken.write_bytes(b"\x1f\x8b" + os.urandom(64))
    assert "not a readable compressed file" in one_error(capsys, fit_args(tmp_path, f"--data.train={broken}"))


@pytest.mark.parametrize("keep", [0.5, 40], ids=["cut-in-half", "header-only"])
def test_a_truncated_zstd_file_is_named_truncated(capsys, tmp_path, keep):
    """An interrupted download of a .jsonl.zst: zstandard's reader stops quietly where the bytes end,
    which read as malformed JSON (half a line) or an empty data set; the file is named truncated."""
    import zstandard

    lines = "".join(json.dumps({"text": f"document {i} " * 40}) + "\n" for i in range(500)).encode()
    whole = zstandard.ZstdCompressor().compress(lines)
    cut = tmp_path / "docs.jsonl.zst"
    cut.write_bytes(whole[: int(len(whole) * keep) if keep < 1 else keep])
    line = one_error(capsys, fit_args(tmp_path, f"--data.train={cut}"))
    assert "docs.jsonl.zst" in line and "the file is truncated" in line


def test_a_zstd_file_of_several_frames_is_read_whole(tmp_path):
    import zstandard

    from anchor_lightning.data import sources
    from anchor_lightning.data.tokenizer import ByteTokenizer

    frames = [zstandard.ZstdCompressor().compress(json.dumps({"text": t}).encode() + b"\n") for t in ("one", "two")]
    (tmp_path / "docs.jsonl.zst").write_bytes(b"".join(frames))  # as `cat a.zst b.zst` makes
    docs = sources.open_source(str(tmp_path / "docs.jsonl.zst"), ByteTokenizer()).load().token_ids
    assert [bytes(d[:-1].tolist()).decode() for d in docs] == ["one", "two"]


def test_gzipped_jsonl_is_read(tmp_path):
    import gzip

    from anchor_lightning.data import sources
    from anchor_lightning.data.tokenizer import ByteTokenizer

    with gzip.open(tmp_path / "docs.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two"}) + "\n")
    docs = sources.open_source(str(tmp_path / "docs.jsonl.gz"), ByteTokenizer()).load().token_ids
    assert [bytes(d[:-1].tolist()).decode() for d in docs] == ["one", "two"]


def test_tokens_outside_every_source_span_are_counted(tmp_path):
    from anchor_lightning.data import formats

    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps({"input_ids": list(range(10, 30)), "source": [{"start": 2, "end": 8}, {"start": 10, "end": 15}]})
        + "\n"
    )
    with pytest.warns(RunWarning, match="9 tokens on 1 lines lie outside every source span"):
        documents = formats.read_token_documents(path)
    assert [len(d) for d in documents.token_ids] == [6, 5]


def test_a_killed_packers_temporary_entry_is_removed_by_the_next_one(tmp_path):
    import socket

    from anchor_lightning.data.cache import write_rows
    from anchor_lightning.data.packing import PackingSpec, PackStats, iter_packed_rows

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    stale = tmp_path / f".entry.{socket.gethostname()}.{dead.stdout.strip()}.abcd1234.tmp"
    stale.mkdir()
    (stale / "input_ids.bin").write_bytes(b"half")
    other_host = tmp_path / ".entry.elsewhere.1.abcd1234.tmp"  # another node's writer may still be alive
    other_host.mkdir()
    stats = PackStats()
    write_rows(
        tmp_path / "entry", iter_packed_rows([[1, 5, 6, 7]], PackingSpec(8, "per_doc", 1, (1,)), stats), stats, {}
    )
    assert not stale.exists() and other_host.exists() and (tmp_path / "entry" / "meta.json").is_file()


def test_evaluate_and_diagnose_bad_models_are_one_line(capsys, tmp_path):
    (tmp_path / "only-config").mkdir()
    (tmp_path / "only-config" / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 258}))
    line = one_error(capsys, ["evaluate", "--model", str(tmp_path / "only-config"), "--out", str(tmp_path / "e")])
    assert "cannot load the checkpoint" in line
    assert "no such model directory" in one_error(capsys, ["evaluate", "--model", str(tmp_path / "none")])
    assert "no such model directory" in one_error(capsys, ["diagnose", "--model", str(tmp_path / "none")])
    assert "unrecognized arguments: --bogus" in one_error(capsys, ["diagnose", "--model", "x", "--bogus"])
    # fit's checkpoints (a file, or a sharded directory) are not models: the line says how to make one
    (tmp_path / "last.ckpt").write_bytes(b"a fit checkpoint")
    (tmp_path / "sharded.ckpt").mkdir()
    (tmp_path / "sharded.ckpt" / ".metadata").write_bytes(b"")
    for verb in ("evaluate", "diagnose"):
        for ckpt in ("last.ckpt", "sharded.ckpt"):
            line = one_error(capsys, [verb, "--model", str(tmp_path / ckpt)])
            assert "a training checkpoint, not a model: export it first (anchor-lightning export --ckpt_path" in line
    assert "no such model directory" in one_error(capsys, ["evaluate", "--model", str(tmp_path / "typo.ckpt")])
    (tmp_path / "x.txt").write_text("a text file")
    assert "not a model directory or .gguf file" in one_error(capsys, ["evaluate", "--model", str(tmp_path / "x.txt")])


def test_needles_that_do_not_fit_the_length_are_one_line(capsys, tmp_path):
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_config

    AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=258)).save_pretrained(tmp_path / "model")
    line = one_error(
        capsys,
        [
            "evaluate",
            "--model",
            str(tmp_path / "model"),
            "--data",
            "default:20",
            "--lengths",
            "64",
            "--out",
            str(tmp_path / "e"),
            "--no_progress",
            "--dtype",
            "float32",
        ],
    )
    assert "field '--lengths'" in line and "cannot hold the single needles" in line and "fewer candidates" in line


def test_the_help_lists_every_verb_and_an_unknown_verb_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for verb in ("fit", "validate", "export", "inspect", "prepare", "evaluate", "diagnose"):
        assert f"\n  {verb} " in out
    assert "unknown verb 'trian'" in one_error(capsys, ["trian"])


def test_inspect_a_gpu_recipe_on_a_machine_without_a_gpu(capsys, tmp_path):
    main(
        [
            "inspect",
            "--config",
            str(ROOT / "recipes" / "debug" / "tiny-gpu.yaml"),
            "--data.train=default:40",
            f"--data.cache_dir={tmp_path}",
            "--seq_len=2048",
        ]
    )
    out = capsys.readouterr().out
    assert "train: " in out and "rows of 2048 slots" in out and "attention mask" in out


def test_inspect_pretokenized_ids_beyond_the_byte_tokenizer_does_not_crash(capsys, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"input_ids": [256, 300 + i, 65, 66, 1000]}) + "\n" for i in range(30)))
    main(
        [
            "inspect",
            "--config",
            MICRO,
            f"--data.train={path}",
            f"--data.cache_dir={tmp_path / 'c'}",
            "--data.val_fraction=0",
        ]
    )
    assert "<id 300>" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "--config", MICRO, "--ckpt_path=/nonexistent/last.ckpt"],
        ["export", "--ckpt_path", "/nonexistent/last.ckpt", "--out", "exported"],  # in the test's own folder
        ["evaluate", "--model", "/nonexistent/model"],
    ],
)
@pytest.mark.slow
def test_as_a_user_sees_it_one_line_and_nothing_before_it(tmp_path, argv):
    """The real process: stderr is the error line alone (no start-up lines, no warnings), exit status 2."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "anchor_lightning",
            *argv,
            *([f"--data.cache_dir={tmp_path}"] if argv[0] == "fit" else []),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: "), result.stderr
    assert "/nonexistent/" in result.stderr


def test_config_and_data_errors_name_the_file_and_line(capsys, tmp_path):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model:\n  bogus_key: 3\n")
    assert f"{unknown}: " in one_error(capsys, [*fit_args(tmp_path), "--config", str(unknown)])
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  mode: [anchor\n")
    assert f"{broken}:3: YAML syntax error" in one_error(capsys, [*fit_args(tmp_path), "--config", str(broken)])
    assert "no such config file" in one_error(capsys, [*fit_args(tmp_path), "--config", str(tmp_path / "none.yaml")])
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"input_ids": [256, 5, 6]}) + "\n" + json.dumps({"input_ids": [256, 7000, 6]}) + "\n")
    line = one_error(capsys, fit_args(tmp_path, f"--data.train={rows}", "--data.val_fraction=0"))
    assert f"{rows}:2: field 'input_ids': the data holds token id 7000, outside the model's embedding (258)" in line


def test_resuming_a_finished_run_says_there_is_nothing_to_train(capsys, tmp_path, trained):
    cli = main(
        [
            *fit_args(tmp_path, "--ckpt_path=last", "--trainer.max_steps=3"),
            "--config",
            checkpointing(tmp_path, trained.parent),
        ]
    )
    assert "has finished its 3 steps: nothing to train" in capsys.readouterr().out
    assert cli.trainer.global_step == 0  # stopped there: the checkpoint was never restored


def test_prepare_builds_the_caches_fit_then_uses(capsys, tmp_path):
    main(["prepare", "--config", MICRO, f"--data.cache_dir={tmp_path / 'cache'}"])
    out = capsys.readouterr().out
    assert "train: " in out and "val: " in out and "fit with the same data options finds these caches" in out
    entries = sorted(p for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    stamps = {p.name: (p / "meta.json").stat().st_mtime_ns for p in entries}
    main([*fit_args(tmp_path, "--trainer.max_steps=2")])
    after = sorted(p for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert [p.name for p in after] == [p.name for p in entries]  # nothing new: fit found them
    assert {p.name: (p / "meta.json").stat().st_mtime_ns for p in after} == stamps


class PoisonOneWeight(L.Callback):
    """One NaN weight in the model before validation (a broken checkpoint)."""

    def on_validation_start(self, trainer, pl_module) -> None:
        with torch.no_grad():
            next(pl_module.parameters()).view(-1)[0] = float("nan")


def test_a_broken_model_never_validates_as_perfect(capsys, tmp_path):
    """The validation sums used to drop NaN values: val/loss 0.0, ppl 1.0, exit 0. Now the loss is NaN
    in TensorBoard and the run stops with one line (the non-finite policy's default). (A RoPE base of 0,
    the other way to such a model, is now refused before any work: tests/test_bad_flags.py.)"""
    broken = "--trainer.callbacks+=tests.test_user_errors.PoisonOneWeight"
    from tests.test_cli import scalars

    runs = tmp_path / "runs"
    line = one_error(
        capsys,
        ["validate", "--config", MICRO, f"--data.cache_dir={tmp_path / 'cache'}", broken,
         f"--trainer.logger.init_args.save_dir={runs}"],
    )  # fmt: skip
    assert "validation loss is not finite" in line and "model.on_nonfinite" in line, line
    logged = scalars(runs)
    assert math.isnan(logged["val/loss"][-1][1]) and logged["val/nonfinite_batches"][-1][1] > 0


def test_checkpoint_state_carries_a_version_and_a_newer_one_is_refused(capsys, tmp_path, trained):
    from anchor_lightning.checkpoint.identity import STATE_VERSION, VERSION_KEY

    checkpoint = torch.load(trained, weights_only=False)
    assert checkpoint[VERSION_KEY] == STATE_VERSION
    checkpoint[VERSION_KEY] = STATE_VERSION + 1
    future = tmp_path / "future.ckpt"
    torch.save(checkpoint, future)
    line = one_error(capsys, ["export", "--ckpt_path", str(future), "--out", str(tmp_path / "hf")])
    assert f"{future}: field '--ckpt_path': written by a newer anchor-lightning" in line, line
    line = one_error(capsys, [*fit_args(tmp_path, f"--ckpt_path={future}", "--trainer.max_steps=6")])
    assert "written by a newer anchor-lightning" in line and "upgrade" in line, line
