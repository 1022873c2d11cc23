"""TensorBoard as a run's dashboard: the scalars by group (``train/``, ``val/``, ``perf/``, ``memory/``),
no ``epoch`` scalar and no ``hp_metric`` placeholder, and HPARAMS listing the settings that make the run
what it is against its ``val/loss`` (``AnchorLM.run_summary``)."""

from __future__ import annotations

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


def is_logging_step(trainer, steps_done: int | None = None) -> bool:
    """Whether the optimizer step that makes ``steps_done`` steps (default: the trainer's count, i.e.
    the step just finished) is one whose metrics reach the loggers: every ``log_every_n_steps`` steps,
    and the last (Lightning's rule, from public attributes). Metrics are read only then, so the other
    steps never wait for the device."""
    steps = trainer.global_step if steps_done is None else steps_done
    return steps % max(1, trainer.log_every_n_steps) == 0 or trainer.should_stop


class TensorBoard(TensorBoardLogger):
    """Lightning's TensorBoardLogger with the run's own HPARAMS (the arguments are TensorBoardLogger's)."""

    def __init__(self, *args, default_hp_metric: bool = False, **kwargs) -> None:
        # written as a plain call: jsonargparse reads it to find TensorBoardLogger's arguments behind *args
        super().__init__(*args, default_hp_metric=default_hp_metric, **kwargs)  # type: ignore[misc]

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        # Lightning adds the epoch to every logged step; with max_steps runs it is noise, and the first
        # scalar TensorBoard shows
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

    @rank_zero_only
    def log_run(self, params: dict, metric_names: list[str]) -> None:
        """The HPARAMS entry: ``params`` (strings and numbers) against the named scalars, whose values
        come from their own curves (nothing is logged for them here)."""
        from torch.utils.tensorboard.summary import hparams

        self.hparams.update(params)
        experiment, start, end = hparams(params, {name: 0.0 for name in metric_names})
        writer = self.experiment._get_file_writer()  # as TensorBoardLogger.log_hyperparams writes them
        for summary in (experiment, start, end):
            writer.add_summary(summary)


def read_scalars(log_dir) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar a run logged under ``log_dir`` (all its event files, restarts included), as
    ``{tag: [(step, value, wall_time), ...]}`` sorted by step, the latest write of a step kept (a resumed
    run logs a step again, in a file of its own)."""
    from pathlib import Path

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    written: dict[str, list] = {}
    for events in Path(log_dir).rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            written.setdefault(tag, []).extend(accumulator.Scalars(tag))
    result = {}
    for tag, points in written.items():
        last = {e.step: (e.step, e.value, e.wall_time) for e in sorted(points, key=lambda e: e.wall_time)}
        result[tag] = sorted(last.values())
    return result
