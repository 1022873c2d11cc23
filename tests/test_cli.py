"""The real CLI, in-process: a CPU fit writes TensorBoard scalars and the loss falls; links and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from anchor_lightning.commands import main
from anchor_lightning.loggers import read_scalars

MICRO = str(Path(__file__).parent / "configs" / "micro.yaml")


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(step, value) for step, value, _ in points] for tag, points in read_scalars(log_dir).items()}


def fit(tmp_path: Path, *overrides: str) -> dict[str, list[tuple[int, float]]]:
    main(
        [
            "fit",
            "--config",
            MICRO,
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            f"--data.cache_dir={tmp_path / 'cache'}",
            *overrides,
        ]
    )
    return scalars(tmp_path / "runs")


@pytest.mark.parametrize("mode", ["anchor", "full"])
def test_cpu_fit_writes_tensorboard_and_the_loss_falls(tmp_path, mode):
    logged = fit(tmp_path, f"--model.mode={mode}")
    loss = [v for _, v in logged["train/loss"]]
    assert len(loss) == 25
    assert loss[-1] < loss[0] - 1.5, loss
    for tag in (
        "train/ppl",
        "train/lr",
        "train/grad_norm",
        "train/tokens_seen",
        "perf/tokens_per_sec",
        "val/loss",
        "val/ppl",
    ):
        assert tag in logged, tag
    ppl = dict(logged["train/ppl"])
    for step, value in logged["train/loss"]:
        assert ppl[step] == pytest.approx(2.718281828459045**value, rel=1e-5)
    tokens = [v for _, v in logged["train/tokens_seen"]]
    assert tokens == sorted(tokens) and tokens[0] > 0


def test_the_readme_quotes_the_quick_starts_banner(tmp_path, capsys):
    """The kernels line the README shows for the CPU quick start is the one fit prints for its settings
    (SDPA, 32-true: the linear layers run in fp32)."""
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    quoted = readme.split("(the quick start on a CPU: `", 1)[1].split("`", 1)[0]
    fit(tmp_path, "--trainer.max_steps=1", "--model.backend=sdpa", "--trainer.precision=32-true")
    assert quoted in capsys.readouterr().out.splitlines()


def test_row_length_is_given_once_and_reaches_model_and_data(tmp_path):
    cli = main(
        ["--config", MICRO, "--seq_len=192", "--model.backend=varlen", f"--data.cache_dir={tmp_path}"], run=False
    )
    assert cli.model.seq_len == cli.datamodule.seq_len == 192
    assert cli.datamodule.layout == "per_doc" and cli.datamodule.mode == "anchor"


def test_a_second_config_layers_a_fragment(tmp_path):
    fragment = tmp_path / "fragment.yaml"
    fragment.write_text("trainer:\n  max_steps: 7\nmodel:\n  mode: intra_doc_reset\n")
    cli = main(["--config", MICRO, "--config", str(fragment), f"--data.cache_dir={tmp_path}"], run=False)
    assert cli.trainer.max_steps == 7
    assert cli.model.mode == cli.datamodule.mode == "intra_doc_reset"


def test_validate_subcommand_runs(tmp_path, capsys):
    main(
        [
            "validate",
            "--config",
            MICRO,
            f"--data.cache_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    assert "val/loss" in capsys.readouterr().out


def test_validating_a_checkpoint_names_the_step_it_was_saved_at(tmp_path, capsys):
    """validate does not restore the trainer's step (it stays 0): the line names the checkpoint's."""
    fragment = tmp_path / "save.yaml"
    fragment.write_text(
        "trainer:\n  enable_checkpointing: true\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {tmp_path / 'ckpt'}, save_last: true}}\n"
    )
    common = ["--config", MICRO, f"--data.cache_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    main(["fit", *common, "--config", str(fragment), "--trainer.max_steps=3", "--trainer.val_check_interval=3"])
    capsys.readouterr()
    main(
        ["validate", *common, "--trainer.enable_progress_bar=true", "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("validation at step")]
    assert lines and lines[0].startswith("validation at step 3: val/loss "), lines


def test_global_batch_size_sets_accumulation(tmp_path):
    cli = main(
        ["--config", MICRO, "--data.global_batch_size=8", "--data.micro_batch_size=2", f"--data.cache_dir={tmp_path}"],
        run=False,
    )
    assert cli.trainer.accumulate_grad_batches == 4


def test_a_global_batch_that_replaces_the_recipes_accumulation_says_so(tmp_path, capsys):
    given = [
        "--config",
        MICRO,
        "--data.global_batch_size=8",
        "--data.micro_batch_size=2",
        f"--data.cache_dir={tmp_path}",
    ]
    cli = main([*given, "--trainer.accumulate_grad_batches=2"], run=False)
    assert cli.trainer.accumulate_grad_batches == 4
    said = capsys.readouterr().out
    assert "trainer.accumulate_grad_batches 2 -> 4: data.global_batch_size 8 = 2 rows x 1 devices x 4" in said, said
    main([*given, "--trainer.accumulate_grad_batches=4"], run=False)  # the same value: nothing to say
    assert "accumulate_grad_batches" not in capsys.readouterr().out


def test_global_batch_size_must_divide(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "--config",
                MICRO,
                "--data.global_batch_size=7",
                "--data.micro_batch_size=2",
                f"--data.cache_dir={tmp_path}",
            ],
            run=False,
        )
    assert "global batch of 7 rows is not a multiple of 2 rows x 1 devices" in capsys.readouterr().err


def test_progress_bar_counts_optimizer_steps_and_shows_loss_lr_and_speed(tmp_path, monkeypatch):
    from anchor_lightning.commands import train as cli
    from tests.helpers import RecordProgressTotal

    monkeypatch.setattr(cli, "interactive_output", lambda: True)

    RecordProgressTotal.seen.clear()
    main(
        [
            "fit",
            "--config",
            MICRO,
            "--trainer.enable_progress_bar=true",
            "--trainer.accumulate_grad_batches=2",
            "--trainer.max_steps=3",
            "--trainer.callbacks+=tests.helpers.RecordProgressTotal",
            f"--data.cache_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    total, description = RecordProgressTotal.seen[0]
    assert total == 3  # optimizer steps, not Lightning's 6 micro-batches
    assert description.strip() == "Epoch 0"  # not "Epoch 0/-2"
    end = RecordProgressTotal.end
    assert end["completed"] == 3
    assert set(end["metrics"]) >= {"loss", "lr"} and "v_num" not in end["metrics"]
    assert all(isinstance(v, str) for v in end["metrics"].values())


def test_output_to_a_file_gets_plain_progress_lines(tmp_path, capsys):
    """Not a terminal (as under pytest, nohup or SLURM): a banner, a line per logging step with loss,
    tokens/s and ETA, the validation result and where everything went; no bar frames."""
    main(
        [
            "fit",
            "--config",
            MICRO,
            "--trainer.enable_progress_bar=true",
            "--trainer.max_steps=4",
            "--trainer.log_every_n_steps=2",
            "--trainer.val_check_interval=4",
            f"--data.cache_dir={tmp_path / 'cache'}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        ]
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    banner = next(line for line in lines if line.startswith("training "))
    assert "mode anchor, backend sdpa, rows of 256 slots, RoPE base 10,000, 4 rows per step, 4 steps" in banner
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["2/4", "4/4"]
    assert all("loss " in line and "eta " in line for line in steps) and "tokens/s" in steps[-1]
    assert any(line.startswith("validation at step 4: val/loss ") for line in lines)
    assert lines[-1].startswith("done: step 4 in ") and str(tmp_path / "runs") in lines[-1]
    assert "\r" not in out and "━" not in out


def test_memory_savers_train_the_same_losses_through_the_cli(tmp_path):
    """Selective checkpointing, activation offload and MLP tiling are the same function: the first
    steps' logged losses equal the plain run's (CPU, fp32, same seed and rows)."""
    steps = ["--trainer.max_steps=4", "--trainer.log_every_n_steps=1", "--trainer.limit_val_batches=0"]
    plain = fit(tmp_path / "plain", *steps)
    saved = fit(
        tmp_path / "saved",
        *steps,
        "--model.activation_checkpointing=true",
        "--model.checkpoint_layers=1",
        "--model.offload_activations=true",
        "--model.mlp_tile=64",
        "--model.kernels=none",
    )
    assert [s for s, _ in plain["train/loss"]] == [s for s, _ in saved["train/loss"]]
    for (_, a), (_, b) in zip(plain["train/loss"], saved["train/loss"]):
        assert b == pytest.approx(a, rel=1e-5)


def test_liger_kernels_on_cpu_are_refused_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, "--trainer.max_steps=1", "--model.kernels=liger")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "model.kernels" in err and "liger-kernel and a CUDA device" in err and "Traceback" not in err


def test_tensorboard_shows_the_runs_settings_against_val_loss_and_no_epoch_scalar(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    fit(
        tmp_path,
        "--trainer.max_steps=4",
        "--trainer.val_check_interval=4",
        "--trainer.logger.class_path=anchor_lightning.loggers.TensorBoard",
    )
    events = EventAccumulator(str(next((tmp_path / "runs").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "val/loss" in scalars and "epoch" not in scalars and "hp_metric" not in scalars
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    shown = {
        key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
        for key, value in start.hparams.items()
    }
    assert shown["mode"] == "anchor" and shown["backend"] == "sdpa" and shown["layout"] == "shared"
    assert shown["seq_len"] == 256 and shown["rows_per_step"] == 4 and shown["lr"] == pytest.approx(0.005)
    assert shown["precision"] == "32-true" and shown["kernel"] == "none" and "_instantiator" not in shown
    assert shown["precision_linear"] == "as precision"  # no FP8 linear layers (model.float8)
    assert sorted(shown)[:5] == ["backend", "kernel", "layout", "lr", "mode"]  # what TensorBoard ticks first
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/loss", "val/ppl"}


def test_every_metric_is_logged_at_the_same_logging_steps(tmp_path):
    """The module, the throughput callback and gradient clipping agree on which steps log (every 2nd
    here, and the last), with no device sync elsewhere."""
    logged = fit(tmp_path, "--trainer.max_steps=7", "--trainer.log_every_n_steps=2", "--trainer.gradient_clip_val=1.0")
    steps = [s for s, _ in logged["train/loss"]]
    assert steps == [1, 3, 5]  # Lightning's step index of optimizer steps 2, 4, 6
    assert [s for s, _ in logged["train/grad_norm"]] == steps and [s for s, _ in logged["train/lr"]] == steps
    assert [s for s, _ in logged["perf/tokens_per_sec"]] == steps[1:]  # the first window is warm-up


def test_tokens_per_second_leaves_out_validation_and_evaluations_between_steps(tmp_path, monkeypatch):
    """An evaluation between steps (inside ``outside_training``) and a validation are not training time:
    the windows holding them read like the others, not as slow steps. The throughput callback reads a
    fake clock that a step advances by 1 s and an evaluation or a validation batch by 100 s, so the
    result does not hang on how busy the machine is."""
    from types import SimpleNamespace

    import lightning as L

    from anchor_lightning.callbacks import throughput
    from anchor_lightning.callbacks.parts import outside_training

    now = [0.0]
    monkeypatch.setattr(throughput, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    class SlowEvaluations(L.Callback):
        def on_train_batch_start(self, trainer, *args, **kwargs):
            now[0] += 1.0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step in (4, 5):
                with outside_training(trainer):
                    now[0] += 100.0

        def on_validation_batch_end(self, trainer, *args, **kwargs):
            now[0] += 100.0

    cli = main(
        [
            "--config",
            MICRO,
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            f"--data.cache_dir={tmp_path / 'cache'}",
            "--trainer.max_steps=12",
            "--trainer.log_every_n_steps=2",
            "--trainer.val_check_interval=7",
        ],
        run=False,
    )
    cli.trainer.callbacks.append(SlowEvaluations())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    rates = [rate for _, rate in scalars(tmp_path / "runs")["perf/tokens_per_sec"]]
    assert len(rates) >= 4
    typical = sorted(rates)[len(rates) // 2]
    assert min(rates) > 0.5 * typical, rates  # 100 s left in a window of 2 s of steps would read 50x lower
