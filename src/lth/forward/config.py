"""The ``lth forward-sweep`` configuration (TOML) and the run that writes its outputs.

Sections ``[data]`` (as for ``lth run``), ``[model]`` (MLP widths), ``[train]`` (dense
pre-training), ``[selection]`` (forward selection and fine-tuning); top-level ``name`` and
``seed``. Every problem is reported at once, naming the key and what is allowed.

>>> cfg = ForwardSweepConfig.from_dict({"train": {"pretrain_iterations": [0, 100]}})
>>> cfg.train.pretrain_iterations, cfg.selection.tol
((0, 100), 0.05)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import (
    INITIALIZERS,
    OPTIMIZERS,
    DataConfig,
    TrainConfig,
    load_config,
)
from ..config_schema import Problem, Section, check_choice, name_problem
from ..errors import StoreError
from ..store.layout import CONFIG
from ..train import torch_threads


@dataclass(frozen=True)
class ForwardModelConfig(Section):
    """The dense MLP (``lth.create_model("mlp", hidden=...)``) and its initializer."""

    hidden: tuple[int, ...] = (300, 100)
    initializer: str = "xavier_normal"

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        if not self.hidden or any(h < 1 for h in self.hidden):
            p.append(("hidden", f"got {list(self.hidden)}; a non-empty list of positive "
                                "widths, e.g. hidden = [300, 100]"))
        check_choice(p, "initializer", self.initializer, INITIALIZERS)
        return p


@dataclass(frozen=True)
class ForwardTrainConfig(Section):
    """Dense pre-training: one run, snapshotted at every ``pretrain_iterations`` count;
    ``threads``: torch threads for the whole sweep (0 keeps torch's setting)."""

    pretrain_iterations: tuple[int, ...] = (0, 50, 100, 200, 500, 1000, 2000)
    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 60
    threads: int = 1

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        if self.threads < 0:
            p.append(("threads", f"got {self.threads!r}; must be >= 1 (0 keeps torch's "
                                 "setting)"))
        its = list(self.pretrain_iterations)
        if not its or any(i < 0 for i in its) or len(set(its)) != len(its):
            p.append(("pretrain_iterations", f"got {its}; a non-empty list of distinct "
                                             "iteration counts >= 0, e.g. [0, 100, 1000]"))
        check_choice(p, "optimizer", self.optimizer, OPTIMIZERS)
        if not self.lr > 0:
            p.append(("lr", f"got {self.lr!r}; must be > 0"))
        if not 0 <= self.momentum < 1:
            p.append(("momentum", f"got {self.momentum!r}; must be in [0, 1)"))
        if self.weight_decay < 0:
            p.append(("weight_decay", f"got {self.weight_decay!r}; must be >= 0"))
        if self.batch_size < 1:
            p.append(("batch_size", f"got {self.batch_size!r}; must be >= 1"))
        return p

    def train_config(self) -> TrainConfig:
        return TrainConfig(optimizer=self.optimizer, lr=self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, batch_size=self.batch_size)


@dataclass(frozen=True)
class SelectionConfig(Section):
    """Forward selection: ``batch_size`` training examples score each step; a layer stops
    at loss <= (1 + ``tol``) × the dense loss or at ``max_width`` neurons (one integer for
    every hidden layer, or a list, one per layer; omitted: no cap). Then ``finetune_steps``
    steps at ``finetune_lr`` (default: ``train.lr``)."""

    batch_size: int = 1000
    tol: float = 0.05
    max_width: int | tuple[int, ...] | None = None
    finetune_steps: int = 0
    finetune_lr: float | None = None

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        if self.batch_size < 1:
            p.append(("batch_size", f"got {self.batch_size!r}; must be >= 1"))
        if not self.tol >= 0:
            p.append(("tol", f"got {self.tol!r}; a relative loss tolerance >= 0, e.g. 0.05"))
        widths = [self.max_width] if isinstance(self.max_width, int) else self.max_width or []
        if any(w < 1 for w in widths) or self.max_width == ():
            p.append(("max_width", f"got {self.max_width!r}; a positive integer, or a list "
                                   "of them (one per hidden layer)"))
        if self.finetune_steps < 0:
            p.append(("finetune_steps", f"got {self.finetune_steps!r}; must be >= 0"))
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            p.append(("finetune_lr", f"got {self.finetune_lr!r}; must be > 0"))
        return p


_SECTIONS: dict[str, type[Section]] = {"data": DataConfig, "model": ForwardModelConfig,
                                        "train": ForwardTrainConfig,
                                        "selection": SelectionConfig}


@dataclass(frozen=True)
class ForwardSweepConfig(Section):
    """One pre-training sweep: ``name``, ``seed`` and the four sections."""

    name: str = "forward_sweep"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ForwardModelConfig = field(default_factory=ForwardModelConfig)
    train: ForwardTrainConfig = field(default_factory=ForwardTrainConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        if self.seed < 0:
            p.append(("seed", f"got {self.seed!r}; must be >= 0"))
        problem = name_problem(self.name)
        if problem:
            p.append(("name", f"got {self.name!r}; {problem}"))
        mw = self.selection.max_width
        if isinstance(mw, tuple) and len(mw) != len(self.model.hidden):
            p.append(("selection.max_width", f"got {list(mw)}: {len(mw)} widths for "
                      f"{len(self.model.hidden)} hidden layers; give one per layer"))
        return p

    @classmethod
    def parse(cls, data: dict, prefix: str = "") -> tuple[Any, list[Problem]]:
        return cls.parse_nested(data, prefix, _SECTIONS)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed,
                **{k: getattr(self, k).to_dict() for k in _SECTIONS}}


def load_forward_config(path: str | Path, overrides: Sequence[str] = ()) -> ForwardSweepConfig:
    """Read a sweep TOML file, apply ``key=value`` overrides, validate everything."""
    return load_config(path, overrides, kind=ForwardSweepConfig, what="forward-sweep config")


def run_forward_sweep(cfg: ForwardSweepConfig, out: str | Path, *,
                      progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run the sweep of ``cfg`` and write ``sweep.csv``, ``sweep.png``, ``sweep.svg`` and
    ``config.json`` into ``out`` (created); returns the table."""
    from ..data import load_dataset
    from ..init import initialize
    from ..models import create_model
    from ..report.figures_forward import pretraining_sweep_figure
    from ..seeding import derive_seed
    from .sweep import pretraining_sweep

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create --out {out} ({exc}); give a writable path") from None
    d = cfg.data
    data = load_dataset(d.name, val_size=d.val_size, split_seed=d.split_seed, root=d.root,
                        download=d.download, augment=d.augment)
    with torch.random.fork_rng(devices=[]):  # nn.Linear draws weights from the global RNG
        model = create_model("mlp", input_shape=data.input_shape,
                             num_classes=data.num_classes, hidden=list(cfg.model.hidden))
    initialize(model, cfg.model.initializer, derive_seed(cfg.seed, "init"))
    s = cfg.selection
    mw = list(s.max_width) if isinstance(s.max_width, tuple) else s.max_width
    with torch_threads(cfg.train.threads):
        table = pretraining_sweep(model, data, cfg.train.pretrain_iterations,
                                  cfg.train.train_config(), selection_size=s.batch_size,
                                  tol=s.tol, max_width=mw, finetune_steps=s.finetune_steps,
                                  finetune_lr=s.finetune_lr, seed=cfg.seed, progress=progress)
    table.to_csv(out / "sweep.csv", index=False)
    (out / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    fig = pretraining_sweep_figure(table, title=f"{cfg.name}: greedy forward selection after "
                                                f"dense pre-training ({data.name})")
    fig.savefig(out / "sweep.png", dpi=150)
    fig.savefig(out / "sweep.svg")
    return table


def sweep_table_text(table: pd.DataFrame) -> str:
    """The sweep table as printed by the CLI: iterations, widths, losses, accuracies."""
    widths = [c for c in table if c.startswith("width_")]
    cols = {"pretrain_iterations": "pre-train it", **{w: f"w{w[6:]}" for w in widths},
            "pct_weights": "% weights", "dense_train_loss": "dense train loss",
            "dense_test_acc": "dense test acc", "sub_train_loss": "sub train loss",
            "sub_test_acc": "sub test acc", "ft_train_loss": "ft train loss",
            "ft_test_acc": "ft test acc"}
    if "ft_test_acc" in table and table["ft_test_acc"].isna().all():  # no fine-tuning
        del cols["ft_train_loss"], cols["ft_test_acc"]
    view = table[[c for c in cols if c in table]].rename(columns=cols)
    return view.to_string(index=False, float_format=lambda v: f"{v:.4f}",
                          formatters={"% weights": "{:.1f}".format})
