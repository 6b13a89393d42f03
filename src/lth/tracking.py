"""Optional logging of every finished level to TensorBoard and/or MLflow.

Both are extras, imported only when used: ``pip install tensorboard`` / ``mlflow-skinny``
(or ``lth[tracking]``). A tracker sees each level once, when it finishes in this process:
its summary (as metrics at step = level) and its evaluation curve (as
``level_<ℓ>/<metric>`` at step = training iteration), plus the resolved config.

Any object with ``start(run_dir, config)``, ``log_level(level, summary, history)`` and
``close()`` is a tracker (``LotteryModel.run(trackers=[...])`` calls only those).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .experiment.result import curve_metrics, level_metrics
from .store import RunDir


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and v == v and abs(v) != float("inf")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v)[:500]
    return out


class TensorBoard:
    """Scalars under ``logdir/<run directory name>``."""

    def __init__(self, logdir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard logging needs tensorboard: pip install "
                              "tensorboard (or lth[tracking])") from None
        self._writer_cls, self.logdir, self._w = SummaryWriter, Path(logdir), None

    def start(self, run_dir: Path, config: dict[str, Any]) -> None:
        self._w = self._writer_cls(log_dir=str(self.logdir / run_dir.name))
        self._w.add_text("config", f"```\n{json.dumps(config, indent=2, default=str)}\n```")

    def log_level(self, level: int, summary: dict[str, Any], history: list[dict]) -> None:
        assert self._w is not None
        for m in level_metrics(summary):  # absent or None values are skipped
            if _finite(summary.get(m)):
                self._w.add_scalar(f"levels/{m}", summary[m], global_step=level)
        for row in history:
            for m in curve_metrics(row):
                if _finite(row.get(m)):
                    self._w.add_scalar(f"level_{level}/{m}", row[m], global_step=int(row["step"]))
        self._w.flush()

    def close(self) -> None:
        if self._w is not None:
            self._w.close()


class MLflow:
    """One MLflow run per lth run (its id kept in the run directory, so a resumed run
    keeps logging into the same MLflow run)."""

    def __init__(self, tracking_uri: str, experiment: str = "lth"):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("MLflow logging needs mlflow: pip install mlflow-skinny (or "
                              "lth[tracking])") from None
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
        except Exception as exc:  # MLflow refuses some stores (e.g. a plain folder)
            raise ConfigError(f"MLflow store {tracking_uri!r} cannot be used ({exc}); use "
                              "e.g. 'sqlite:///mlflow.db'") from None
        self.experiment_id = (found.experiment_id if found is not None
                              else self.client.create_experiment(experiment))
        self.run_id: str | None = None

    def start(self, run_dir: Path, config: dict[str, Any]) -> None:
        kept = RunDir(run_dir).tracking_id("mlflow")
        if kept is not None:
            self.run_id = kept
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(self.experiment_id, run_name=run_dir.name)
        self.run_id = run.info.run_id
        RunDir(run_dir).save_tracking_id("mlflow", self.run_id)
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in _flatten(config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log_level(self, level: int, summary: dict[str, Any], history: list[dict]) -> None:
        import time

        from mlflow.entities import Metric

        assert self.run_id is not None
        now = int(time.time() * 1000)
        metrics = [Metric(m, float(summary[m]), now, level) for m in level_metrics(summary)
                   if _finite(summary.get(m))]
        metrics += [Metric(f"level_{level}.{m}", float(row[m]), now, int(row["step"]))
                    for row in history for m in curve_metrics(row) if _finite(row.get(m))]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id)
