"""TensorBoard as a run's dashboard: the scalars by group (``train/``, ``val/``, ``perf/``, ``memory/``),
no ``epoch`` scalar and no ``hp_metric`` placeholder, and HPARAMS listing the settings that make the run
what it is against its ``val/loss`` (``AnchorLM.run_summary``)."""

from __future__ import annotations

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


class TensorBoard(TensorBoardLogger):
    """Lightning's TensorBoardLogger with the run's own HPARAMS (the arguments are TensorBoardLogger's)."""

    def __init__(self, *args, default_hp_metric: bool = False, **kwargs) -> None:
        super().__init__(*args, default_hp_metric=default_hp_metric, **kwargs)

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
