"""What a model is trained to do: its loss, its metrics, and which part of its output they
read.

A :class:`Task` is the loss (``loss(output, target)``, a mean over the batch), named
metrics (``metric(output, target)`` gives one value per example or element; a split's
metric is the mean over all of them), and what the metrics aim for (``"max"`` or
``"min"``). Training, evaluation, the level summaries (``best_test_<metric>``,
``final_test_<metric>``, ``early_stop_test_<metric>``), tables, figures and reports all
follow the task; classification's metric is ``acc``, so its columns are the paper's.

Built in (TOML ``[task] name = ...``): ``classification`` (cross-entropy; ``acc``),
``multilabel`` (binary cross-entropy on logits; per-label ``acc`` and ``exact`` match),
``regression`` (mean squared error; ``mae``, ``mse``), ``regression_l1`` (mean absolute
error; ``mae``, ``mse``) and ``language_model`` (cross-entropy over every token of
(batch, time, vocabulary) logits; token ``acc``, perplexity ``ppl``).

>>> import torch
>>> task = TASKS["regression"]
>>> out, y = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0])
>>> float(task.loss(out, y)), task.metric_values(out, y)["mae"].tolist()
(2.0, [0.0, 2.0])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError, ModelError
from .registry import Registry

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GOALS = ("max", "min")
LABEL_KINDS = ("class", "multilabel", "real", "tokens", "any")


@dataclass(frozen=True)
class Task:
    """A loss and metrics (see the module docstring).

    ``goals``: ``"max"`` or ``"min"`` per metric (default ``"max"``). ``from_loss``:
    metrics computed from a split's mean loss (perplexity: ``{"ppl": math.exp}``), aiming
    for ``"min"``. ``labels``: what the targets must be — ``class`` (1-D class indices),
    ``multilabel`` (0/1 per label), ``real`` (numbers), ``tokens`` (class indices of any
    shape), ``any`` (not checked). ``loss_name`` labels the loss in figures.
    """

    name: str
    loss: Loss
    metrics: Mapping[str, Metric] = field(default_factory=dict)
    goals: Mapping[str, str] = field(default_factory=dict)
    from_loss: Mapping[str, Callable[[float], float]] = field(default_factory=dict)
    labels: str = "any"
    loss_name: str = "loss"

    def __post_init__(self) -> None:
        if not callable(self.loss):
            raise ConfigError(f"task {self.name!r}: loss must be a function (output, target) "
                              f"-> scalar tensor, not {type(self.loss).__name__}")
        names = [*self.metrics, *self.from_loss]
        for name in names:
            if not name.isidentifier() or name == "loss":
                raise ConfigError(f"task {self.name!r}: metric name {name!r} must be an "
                                  "identifier other than 'loss' (it names columns: test_<name>)")
        if len(set(names)) != len(names):
            raise ConfigError(f"task {self.name!r}: metric names repeat: {names}")
        if not names:
            raise ConfigError(f"task {self.name!r} has no metrics; give at least one (e.g. "
                              "metrics={'mae': fn}): tables and figures report them")
        for fn in (self.loss, *self.metrics.values(), *self.from_loss.values()):
            _where(fn)  # refuses a function that cannot name itself
        for name, fn in self.metrics.items():
            if not callable(fn):
                raise ConfigError(f"task {self.name!r}: metric {name!r} must be a function "
                                  "(output, target) -> tensor of per-example values")
        bad = {k: v for k, v in self.goals.items() if v not in GOALS or k not in self.metrics}
        if bad:
            raise ConfigError(f"task {self.name!r}: goals {bad} must name its metrics and be "
                              "'max' or 'min'")
        if self.labels not in LABEL_KINDS:
            raise ConfigError(f"task {self.name!r}: labels={self.labels!r}; allowed: "
                              f"{', '.join(LABEL_KINDS)}")

    # -- what the task reports ----------------------------------------------------------
    @property
    def scores(self) -> list[str]:
        """Every metric name, those computed from the loss last."""
        return [*self.metrics, *self.from_loss]

    def goal(self, name: str) -> str:
        """``"max"`` or ``"min"`` for a metric, ``"min"`` for ``loss``."""
        if name == "loss" or name in self.from_loss:
            return "min"
        return self.goals.get(name, "max")

    def describe(self) -> dict[str, Any]:
        """What identifies the task in a run's specification: where its functions live."""
        return {"name": self.name, "loss": _where(self.loss),
                "metrics": {k: _where(v) for k, v in self.metrics.items()},
                "goals": {k: self.goal(k) for k in self.scores},
                "from_loss": {k: _where(v) for k, v in self.from_loss.items()},
                "labels": self.labels}

    # -- computing ------------------------------------------------------------------------
    def metric_values(self, output: torch.Tensor, target: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        """Per-example (or per-element) values of every metric (booleans count as 0/1)."""
        out = {}
        for name, fn in self.metrics.items():
            v = fn(output, target)
            if not torch.is_tensor(v):
                raise ModelError(f"metric {name!r} of task {self.name!r} returned "
                                 f"{type(v).__name__}; return a tensor of per-example values")
            out[name] = v.detach()
        return out

    def with_loss_metrics(self, row: dict[str, float], prefix: str) -> dict[str, float]:
        """``row`` plus the metrics computed from ``row[prefix + 'loss']``."""
        loss = row.get(f"{prefix}loss", math.nan)
        for name, fn in self.from_loss.items():
            try:
                row[f"{prefix}{name}"] = fn(loss) if math.isfinite(loss) else math.nan
            except OverflowError:  # exp of a diverged loss; the divergence check follows
                row[f"{prefix}{name}"] = math.inf
        return row

    def check_targets(self, y: torch.Tensor, split: str) -> None:
        """One clear error when a split's targets are not what the task needs."""
        if self.labels == "any" or y.numel() == 0:
            return
        shape, dtype = tuple(y.shape), str(y.dtype).replace("torch.", "")
        integer = not y.is_floating_point() and y.dtype != torch.bool
        hint = {"class": "1-D class indices 0..C-1", "tokens": "integer class indices",
                "multilabel": "0/1 per label (N, labels)", "real": "numbers"}[self.labels]
        ok = {"class": integer and y.dim() == 1,
              "tokens": integer and y.dim() >= 1,
              "multilabel": y.dim() == 2 and bool(((y == 0) | (y == 1)).all()),
              "real": y.dtype != torch.bool}[self.labels]
        if not ok:
            other = " (for numbers to predict, use task 'regression')" \
                if self.labels == "class" and y.is_floating_point() else ""
            raise DataError(f"task {self.name!r} needs {hint} as targets; y_{split} is "
                            f"{dtype} {shape}{other}")


def _where(fn: Any) -> str:
    """What identifies a loss or metric in a run's specification: a function by where it
    lives (``module.name``), a ``functools.partial`` with its arguments, a callable object
    (``nn.CrossEntropyLoss(label_smoothing=0.1)``) by its class and public settings. A
    lambda or a nested function has no name that outlives the process: refused."""
    if isinstance(fn, functools.partial):
        return (f"{_where(fn.func)}(*{fn.args!r}, "
                f"**{dict(sorted(fn.keywords.items()))!r})")
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if module and qualname:
        if "<" in qualname:
            raise ConfigError(f"{module}.{qualname} is a lambda or a nested function, which "
                              "cannot identify a task's results; define it with def at the "
                              "top of a module")
        return f"{module}.{qualname}"
    cls = type(fn)
    settings = {k: v for k, v in sorted(vars(fn).items()) if not k.startswith("_")
                and isinstance(v, int | float | str | bool | type(None))} \
        if hasattr(fn, "__dict__") else {}
    return f"{cls.__module__}.{cls.__qualname__}({settings!r})"


# -- output selection ----------------------------------------------------------------------
def select_output(output: Any, selector: int | str | None) -> Any:
    """The part of a model's output the loss and metrics read: ``None`` for a tensor
    output, an index into a tuple/list, a key of a dict or a field (``"logits"``)."""
    if selector is None:
        if torch.is_tensor(output):
            return output
        raise ModelError(_unselected(output))
    if isinstance(selector, int) and isinstance(output, tuple | list) \
            and -len(output) <= selector < len(output):
        return output[selector]
    if isinstance(selector, str) and isinstance(output, Mapping) and selector in output:
        return output[selector]
    if isinstance(selector, str) and hasattr(output, selector):
        return getattr(output, selector)
    raise ModelError(f"output = {selector!r} does not select from the model's output, a "
                     f"{type(output).__name__}; {_options(output)}")


def _options(output: Any) -> str:
    if isinstance(output, tuple | list):
        return f"give an index 0..{len(output) - 1}"
    if isinstance(output, Mapping):
        return f"give one of its keys {list(output)}"
    fields = list(getattr(output, "__dataclass_fields__", {}))
    if not fields and hasattr(output, "__dict__"):
        fields = [k for k in vars(output) if not k.startswith("_")]
    return f"give one of its fields {fields}" if fields else "return a tensor, tuple or dict"


def _unselected(output: Any) -> str:
    return (f"the model returns a {type(output).__name__}, not a tensor; say which part the "
            f"loss reads with output=... ({_options(output)})")


# -- built-in tasks ------------------------------------------------------------------------
def _accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return output.argmax(1) == target


def _multilabel_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(output, target.to(output.dtype))


def _label_accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((output > 0) == (target > 0.5)).float()


def _exact_match(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((output > 0) == (target > 0.5)).all(dim=1).float()


def _as_prediction(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The output in the targets' shape ((N,) and (N, 1) are one); refuses any other shape
    instead of letting broadcasting pair every output with every target."""
    if output.numel() != target.numel():
        raise ModelError(f"the model's output has shape {tuple(output.shape)}; for targets of "
                         f"shape {tuple(target.shape)} it must give one number per target "
                         f"({tuple(target.shape)}, or (N, 1) for 1-D targets)")
    return output.reshape(target.shape)


def _mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(_as_prediction(output, target), target.to(output.dtype))


def _l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(_as_prediction(output, target), target.to(output.dtype))


def _absolute_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (_as_prediction(output, target) - target.to(output.dtype)).abs()


def _squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (_as_prediction(output, target) - target.to(output.dtype)).square()


def _token_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def _token_accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output.argmax(-1) == target).float()


# Worker processes do not look tasks up by name from the registry's shipped entries: a
# Task from Python travels inside its experiment; built-ins exist everywhere.
TASKS: Registry[Task] = Registry("task", workers=False)
TASKS.register(Task("classification", F.cross_entropy, {"acc": _accuracy}, labels="class",
                    loss_name="cross-entropy"), name="classification")
TASKS.register(Task("multilabel", _multilabel_loss,
                    {"acc": _label_accuracy, "exact": _exact_match}, labels="multilabel",
                    loss_name="binary cross-entropy"), name="multilabel")
TASKS.register(Task("regression", _mse, {"mae": _absolute_error, "mse": _squared_error},
                    goals={"mae": "min", "mse": "min"}, labels="real",
                    loss_name="mean squared error"), name="regression")
TASKS.register(Task("regression_l1", _l1, {"mae": _absolute_error, "mse": _squared_error},
                    goals={"mae": "min", "mse": "min"}, labels="real",
                    loss_name="mean absolute error"), name="regression_l1")
TASKS.register(Task("language_model", _token_loss, {"acc": _token_accuracy},
                    from_loss={"ppl": math.exp}, labels="tokens",
                    loss_name="cross-entropy per token"), name="language_model")
TASKS.mark_builtin()
CLASSIFICATION = TASKS["classification"]


def get_task(task: str | Task | None) -> Task:
    """A task by registered name, as given, or classification for None."""
    if task is None:
        return CLASSIFICATION
    return task if isinstance(task, Task) else TASKS[task]


def use_task(task: Task) -> None:
    """Register a task given from Python under its name, so that configs name it; a
    built-in name is refused, the same name given again replaces the older task."""
    if task.name in TASKS and TASKS[task.name] == task:
        return  # the same task (also a copy that travelled to a worker process)
    if task.name in TASKS and task.name not in TASKS.user_entries():
        raise ConfigError(f"task name {task.name!r} is lth's own; give your task another name")
    TASKS.register(task, name=task.name, replace=True)
