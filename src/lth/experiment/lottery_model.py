"""``LotteryModel``: one iterative-magnitude-pruning experiment, resumable from its store."""

from __future__ import annotations

import copy
import inspect
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import (
    EarlyBirdConfig,
    ExperimentConfig,
    MaskUpdatesConfig,
    PruneConfig,
    ReinitConfig,
    TaskConfig,
    TrainConfig,
)
from ..config_schema import as_section as _as
from ..config_schema import as_sections
from ..data import Data, load_dataset
from ..errors import ConfigError, explained_os_errors
from ..keras import adapt
from ..models import create_model
from ..store import RunDir
from ..tasks import TASKS, Task, use_task
from ..train import torch_threads
from ..version import __version__
from .imp import Jobs, drive, level_jobs
from .plan import Plan, make_plan
from .progress import Progress, Reporter, reporter
from .result import Result
from .spec import recipe, settings_of, structure_sha

log = logging.getLogger("lth")


def _resolve_task(task: str | Task | TaskConfig | dict | None, output: int | str | None,
                  early_stop: str | None) -> tuple[Task, TaskConfig]:
    """The task object and its ``[task]`` settings, from any way of giving it."""
    if isinstance(task, Task):
        use_task(task)  # configs (and the identity) name it
        task = {"name": task.name}
    elif isinstance(task, str):
        task = {"name": task}
    settings = _as(TaskConfig, task, "task")
    changes = {k: v for k, v in (("output", output), ("early_stop", early_stop))
               if v is not None}
    if changes:
        settings = _as(TaskConfig, {**settings.to_dict(), **changes}, "task")
    return TASKS[settings.name], settings


class LotteryModel:
    """One IMP experiment: levels 0 (dense) .. ``levels`` on any ``nn.Module``.

    Each level trains, then the next level's mask prunes the survivors by the criterion,
    and the survivors are reinitialised (rewound to θ0 by default) before training again.

    >>> import lth
    >>> data = lth.load_digits()
    >>> model = lth.create_model("mlp", input_shape=data.input_shape, num_classes=10)
    >>> exp = lth.LotteryModel(model, data, train={"duration": "200it"}, levels=2)
    >>> exp.run(store=None).table()[["level", "pct_remaining"]].round(1).values.tolist()
    [[0.0, 100.0], [1.0, 80.0], [2.0, 64.0]]
    """

    def __init__(self, model: nn.Module, data: Data, *,
                 train: TrainConfig | dict | None = None,
                 prune: PruneConfig | dict | None = None,
                 reinit: ReinitConfig | dict | None = None,
                 earlybird: EarlyBirdConfig | dict | None = None,
                 mask_updates: MaskUpdatesConfig | dict | None = None,
                 levels: int = 5, seed: int = 0, initializer: str = "default",
                 name: str = "experiment", masks_from: str | Path | Result | None = None,
                 masks_from_mode: str = "same", info: dict[str, Any] | None = None,
                 task: str | Task | TaskConfig | dict | None = None,
                 output: int | str | None = None, early_stop: str | None = None,
                 bias_init: str = "default"):
        """``task``: what the model learns (:mod:`lth.tasks`): a registered name
        (``"regression"``), your own :class:`~lth.tasks.Task`, or the ``[task]`` settings;
        classification by default. ``output``: which part of a tuple/dict model output the
        loss reads; ``early_stop``: the metric that marks the early-stop iteration.
        ``bias_init = "zeros"`` starts Linear/Conv biases at 0 (the paper's LeNet)."""
        # Every keyword as given, for replace(): the constructor's signature is the list.
        self._arguments = {k: v for k, v in locals().items() if k in _KEYWORDS}
        self.model = adapt(model)  # a Keras model gets lth's names and initialisers
        self.data = data
        self.train, self.prune, self.reinit, self.earlybird, self.mask_updates = as_sections(
            (TrainConfig, train, "train"), (PruneConfig, prune, "prune"),
            (ReinitConfig, reinit, "reinit"), (EarlyBirdConfig, earlybird, "earlybird"),
            (MaskUpdatesConfig, mask_updates, "mask_updates"))
        if isinstance(masks_from, Result):
            masks_from = masks_from.path
        self.task, task_config = _resolve_task(task, output, early_stop)
        if isinstance(levels, bool) or not isinstance(levels, int):  # config calls it n_levels
            raise ConfigError(f"levels: got {levels!r}; expected an integer, e.g. levels=3")
        self.config = ExperimentConfig(name=name, seed=seed, n_levels=levels,
                                       masks_from=None if masks_from is None else str(masks_from),
                                       masks_from_mode=masks_from_mode,
                                       train=self.train, prune=self.prune, reinit=self.reinit,
                                       earlybird=self.earlybird, task=task_config,
                                       mask_updates=self.mask_updates)
        self.initializer, self.bias_init = initializer, bias_init
        self.info = info or {}

    def replace(self, **changes: Any) -> LotteryModel:
        """A new experiment of the same model and data, built from the keywords this one
        was given with some of them changed (``seed``, ``levels``, ``prune``,
        ``masks_from``, ``name``, ...: any keyword of the constructor)."""
        unknown = set(changes) - set(self._arguments)
        if unknown:
            raise ConfigError(f"cannot replace {sorted(unknown)}; allowed: "
                              f"{sorted(self._arguments)}")
        return LotteryModel(self.model, self.data, **{**self._arguments, **changes})

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> LotteryModel:
        """Build the model and data named in ``cfg`` (as ``lth run`` does)."""
        d = cfg.data
        data = load_dataset(d.name, val_size=d.val_size, split_seed=d.split_seed, root=d.root,
                            download=d.download, augment=d.augment)
        model = create_model(cfg.model.name, input_shape=data.input_shape,
                             num_classes=data.num_classes, **cfg.model.options)
        return cls(model, data, train=cfg.train, prune=cfg.prune, reinit=cfg.reinit,
                   earlybird=cfg.earlybird, mask_updates=cfg.mask_updates,
                   levels=cfg.n_levels, seed=cfg.seed, initializer=cfg.model.initializer,
                   bias_init=cfg.model.bias_init,
                   name=cfg.name, masks_from=cfg.masks_from,
                   masks_from_mode=cfg.masks_from_mode, task=cfg.task,
                   info={"experiment": cfg.to_dict(), "model": cfg.model.name})

    # -- planning: every check happens here, before any training ----------------------
    def _plan(self, model: nn.Module) -> Plan:
        return make_plan(self, model)

    def check(self) -> Plan:
        """Every check a run makes before training (config against model and data);
        returns the plan."""
        return self._plan(copy.deepcopy(self.model).cpu())

    def spec(self) -> dict[str, Any]:
        """The resolved specification that names this run's directory
        (``<name>-<run_id>``; see :mod:`lth.experiment.spec`)."""
        return self._plan(copy.deepcopy(self.model).cpu()).spec

    def recipe(self) -> dict[str, Any]:
        """What this experiment is, apart from its seed and the run it reuses masks from:
        the number-changing settings, the model's class and structure, the data."""
        model = self.model
        initializer = self.initializer + ("" if self.bias_init == "default" else
                                          f"+bias_{self.bias_init}")
        return recipe(settings_of(self.config.to_dict()), initializer,
                      f"{type(model).__module__}.{type(model).__qualname__}",
                      structure_sha(repr(model)), self.data.identity(), self.task.describe())

    # -- running ----------------------------------------------------------------------
    @explained_os_errors
    def run(self, store: str | Path | None = "runs", *,
            progress: bool | Progress | Reporter = False, trackers: Sequence[Any] = (),
            through: int | None = None) -> Result:
        """Run (or resume) every level; returns the :class:`Result`.

        ``store=None`` runs in a temporary directory that lives as long as the result.
        ``trackers`` (:mod:`lth.tracking`) log each level as it finishes. ``progress``:
        ``True`` for notes and a bar on stderr, a function ``(level, step, end_step)``, or
        a :class:`~lth.experiment.progress.Reporter` (:mod:`lth.experiment.progress`).
        Re-running with the same store skips finished levels and resumes a level from its
        last checkpoint, giving the same numbers as an uninterrupted run; a stored level
        whose files are damaged is recomputed. ``through``: stop after that level (the
        rest can follow later: levels are a prefix of the run).
        """
        keepalive = None
        if store is None:
            keepalive = tempfile.TemporaryDirectory(prefix="lth-")
            store = keepalive.name
        with torch_threads(self.train.threads):
            run = drive(self.levels(Path(store), progress=progress, trackers=list(trackers),
                                    through=through))
        return Result(run.path, _keepalive=keepalive)

    def levels(self, store: Path, *, progress: bool | Progress | Reporter = False,
               trackers: Sequence[Any] = (), through: int | None = None) -> Jobs:
        """:meth:`run` as a generator of training jobs (see
        :func:`lth.experiment.imp.level_jobs`); returns the run's directory. This is how
        several experiments train stacked (:func:`lth.experiment.imp.drive_together`)."""
        model = copy.deepcopy(self.model).cpu()
        plan = self._plan(model)
        info = {**self.info, "name": self.config.name, "experiment_id": plan.experiment_id,
                "level0_key": plan.level0_key,
                "n_levels": self.config.n_levels, "lth_version": __version__,
                "torch_version": torch.__version__, "data": self.data.summary(),
                "model": self.info.get("model", type(self.model).__name__),
                "prunable": {n: model.get_parameter(n).numel() for n in plan.names},
                "output_layer": plan.output, "rates": plan.rates,
                "total_steps": plan.total_steps, "rewind_step": plan.rewind_step,
                **({"masks_source": plan.source.config()} if plan.source is not None else {}),
                **plan.layout.info()}
        run = RunDir.open(store, self.config.name, plan.spec, info)
        model = model.to(plan.device)
        data = self.data.to(plan.device)
        last = self.config.n_levels if through is None else min(through, self.config.n_levels)
        report = reporter(progress)
        if report is not None:
            report.start(last=last, total=plan.total_steps, rewind=plan.rewind_step)
        if trackers:
            saved = run.config()
            shown = {"settings": saved["identity"]["settings"],
                     **{k: v for k, v in saved.items() if k not in ("identity", "experiment")}}
            for tracker in trackers:
                tracker.start(run.path, shown)

        def logged(level: int) -> None:
            for tracker in trackers:
                tracker.log_level(level, run.level(level).summary(),
                                  run.level(level).history())

        try:
            yield from level_jobs(plan, run, model, data, through=last, report=report,
                                  on_level=logged)
        finally:
            if report is not None:
                report.close()
            for tracker in trackers:
                tracker.close()
        return run


_KEYWORDS = [p.name for p in inspect.signature(LotteryModel).parameters.values()
             if p.kind is inspect.Parameter.KEYWORD_ONLY]
