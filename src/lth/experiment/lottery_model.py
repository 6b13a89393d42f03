"""``LotteryModel``: one iterative-magnitude-pruning experiment, resumable from its store."""

from __future__ import annotations

import copy
import hashlib
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..config import EarlyBirdConfig, ExperimentConfig, PruneConfig, ReinitConfig, TrainConfig
from ..data import Data, load_dataset
from ..durations import to_steps
from ..errors import ConfigError, ModelError
from ..init import initialize
from ..masks import Mask, layer_kinds, output_layer, prunable_names
from ..models import create_model
from ..pruning import check_final_counts, make_groups, prune_step, random_like, resolve_rates
from ..reinit import KEEP_TRAINED, reinitialize
from ..seeding import derive_seed, generator
from ..state import get_state, set_state
from ..store import RunDir, atomic_write_bytes, load_tensors, read_json, save_tensors, write_json
from ..train import Span, lr_function, train_level
from . import early
from .mask_source import check_masks_source, masks_identity
from .plan import Plan as _Plan
from .plan import as_section as _as
from .plan import check_random_draw, choose_device, fresh_draw, prune_settings, structured_plan
from .plan import state_sha as _state_sha
from .progress import Progress, progress_bar
from .result import Result, levels_frame, summarize


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
                 levels: int = 5, seed: int = 0, initializer: str = "default",
                 name: str = "experiment", masks_from: str | Path | Result | None = None,
                 masks_from_mode: str = "same", info: dict[str, Any] | None = None):
        self.model = model
        self.data = data
        self.train = _as(TrainConfig, train, "train")
        self.prune = _as(PruneConfig, prune, "prune")
        self.reinit = _as(ReinitConfig, reinit, "reinit")
        self.earlybird = _as(EarlyBirdConfig, earlybird, "earlybird")
        if isinstance(masks_from, Result):
            masks_from = masks_from.path
        self.config = ExperimentConfig(name=name, seed=seed, n_levels=levels,
                                       masks_from=None if masks_from is None else str(masks_from),
                                       masks_from_mode=masks_from_mode,
                                       train=self.train, prune=self.prune, reinit=self.reinit,
                                       earlybird=self.earlybird)
        self.initializer = initializer
        self.info = info or {}

    def replace(self, **changes: Any) -> LotteryModel:
        """A copy with some top-level settings changed (``seed``, ``masks_from``, ``name``,
        ``masks_from_mode``, ``levels``, ``train``, ``prune``, ``reinit``, ``earlybird``,
        ``initializer``)."""
        c = self.config
        kwargs: dict[str, Any] = {
            "train": self.train, "prune": self.prune, "reinit": self.reinit,
            "earlybird": self.earlybird, "levels": c.n_levels, "seed": c.seed,
            "initializer": self.initializer,
            "name": c.name, "masks_from": c.masks_from, "masks_from_mode": c.masks_from_mode,
            "info": self.info}
        unknown = set(changes) - set(kwargs)
        if unknown:
            raise ConfigError(f"cannot replace {sorted(unknown)}; allowed: {sorted(kwargs)}")
        kwargs.update(changes)
        return LotteryModel(self.model, self.data, **kwargs)

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> LotteryModel:
        """Build the model and data named in ``cfg`` (as ``lth run`` does)."""
        d = cfg.data
        data = load_dataset(d.name, val_size=d.val_size, split_seed=d.split_seed, root=d.root,
                            download=d.download, augment=d.augment)
        model = create_model(cfg.model.name, input_shape=data.input_shape,
                             num_classes=data.num_classes, **cfg.model.options)
        return cls(model, data, train=cfg.train, prune=cfg.prune, reinit=cfg.reinit,
                   earlybird=cfg.earlybird,
                   levels=cfg.n_levels, seed=cfg.seed, initializer=cfg.model.initializer,
                   name=cfg.name, masks_from=cfg.masks_from,
                   masks_from_mode=cfg.masks_from_mode,
                   info={"experiment": cfg.to_dict()})

    # -- planning: every check happens here, before any training ----------------------
    def _plan(self, model: nn.Module) -> _Plan:
        cfg, tr = self.config, self.train
        seed = cfg.seed
        initialize(model, self.initializer, derive_seed(seed, "init"))
        theta0 = get_state(model)
        names = prunable_names(model, self.prune.include, self.prune.exclude)
        example = self.data.prepare(self.data.x_train[:2])
        try:
            out = output_layer(model, names, example)
            with torch.no_grad():
                logits = model.eval()(example)
        except Exception as exc:  # the user's forward: report what we fed it
            raise ModelError(f"{type(model).__name__} failed on a batch of shape "
                             f"{tuple(example.shape)} from the data ({type(exc).__name__}: "
                             f"{exc}); check the model's expected input shape") from exc
        if logits.dim() != 2 or logits.shape[1] < self.data.num_classes:
            raise ModelError(f"model output has shape {tuple(logits.shape)}; expected "
                             f"(batch, {self.data.num_classes}) class scores for "
                             f"{self.data.num_classes} classes")
        sizes = {n: model.get_parameter(n).numel() for n in names}
        structure = None
        if self.prune.structure == "unit":
            structure, rates, groups = structured_plan(self.prune, model, names, example, out,
                                                       layer_kinds(model), cfg.n_levels)
            if cfg.masks_from_mode != "same":
                raise ConfigError(f"masks_from_mode = {cfg.masks_from_mode!r} draws single "
                                  "weights at random; with structure = 'unit' use 'same'")
            if cfg.masks_from is not None:
                early.check_unit_source(Path(cfg.masks_from))
        else:
            rates = resolve_rates(self.prune, names, layer_kinds(model), out, cfg.n_levels,
                                  sizes)
            groups = make_groups(self.prune.scope, rates, sizes)
        if cfg.masks_from is None:
            if cfg.masks_from_mode != "same":
                raise ConfigError(f"masks_from_mode = {cfg.masks_from_mode!r} needs masks_from "
                                  "(the run whose mask counts to copy)")
            check_final_counts(groups, self.prune.schedule, cfg.n_levels)
        else:
            check_masks_source(Path(cfg.masks_from), names, sizes, cfg.n_levels)
        if self.reinit.mode == "random":
            check_random_draw(self.model, self.initializer, names)
        n_train = len(self.data.y_train)
        spe = n_train // tr.batch_size
        if spe < 1:
            raise ConfigError(f"train.batch_size = {tr.batch_size} is larger than the "
                              f"training set ({n_train} examples); use a smaller batch")
        total = to_steps(tr.duration, spe)
        k = to_steps(self.reinit.rewind_step, spe)
        if k >= total:
            raise ConfigError(f"reinit.rewind_step = {self.reinit.rewind_step!r} ({k} steps) "
                              f"must be before the end of training ({total} steps)")
        for key, value in [("milestones", m) for m in tr.milestones] + [("warmup", tr.warmup)]:
            if to_steps(value, spe) > total:
                raise ConfigError(f"train.{key}: {value!r} is after the end of training "
                                  f"({total} steps)")
        early.check(self.earlybird, cfg.masks_from, spe, total, k, model, cfg.n_levels)
        span = {"steps_per_epoch": spe, "eval_every": to_steps(tr.eval_every, spe),
                "checkpoint_every": to_steps(tr.checkpoint_every, spe)}
        return _Plan(choose_device(tr.device), names, out, groups, rates, total, k, span,
                     theta0, structure)

    def check(self) -> None:
        """Every check a run makes before training (config against model and data)."""
        self._plan(copy.deepcopy(self.model).cpu())

    def recipe(self) -> dict[str, Any]:
        """What this experiment is, apart from its seed: settings, model structure, data."""
        c = self.config.to_dict()
        for key in ("seed", "masks_from", "name"):
            del c[key]
        for how_not_what in ("threads", "eval_batch_size", "checkpoint_every"):
            del c["train"][how_not_what]
        c["prune"] = prune_settings(self.prune)
        model = self.model
        keys = ("n_levels", "masks_from_mode", "train", "prune", "reinit") + (
            ("earlybird",) if self.earlybird.enabled else ())
        return {"settings": {k: c[k] for k in keys},
                "initializer": self.initializer,
                "model": {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                          "structure_sha256": hashlib.sha256(repr(model).encode()).hexdigest()},
                "data": self.data.identity()}

    def identity(self, plan: _Plan, model: nn.Module) -> dict[str, Any]:
        """What names the run: settings, seed, model, data and library version."""
        c = self.config.to_dict()
        for how_not_what in ("threads", "eval_batch_size", "checkpoint_every"):
            del c["train"][how_not_what]  # change the speed or safety, not the results
        del c["masks_from"]  # its masks' content is identified below, not its path
        c["prune"] = prune_settings(self.prune)
        return {
            "lth": ".".join(__version__.split(".")[:2]),
            "settings": {k: c[k] for k in ("seed", "n_levels", "train", "prune", "reinit") + (
                ("earlybird",) if self.earlybird.enabled else ())},
            "initializer": self.initializer,
            "model": {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                      "structure_sha256": hashlib.sha256(repr(model).encode()).hexdigest(),
                      "theta0_sha256": _state_sha(plan.theta0)},
            "data": self.data.identity(),
            **({"masks_from": masks_identity(Path(src), self.config.n_levels)}
               if (src := self.config.masks_from) else {}),
        }

    # -- running ----------------------------------------------------------------------
    def run(self, store: str | Path | None = "runs", *,
            progress: bool | Progress = False, trackers: Sequence[Any] = ()) -> Result:
        """Run (or resume) every level; returns the :class:`Result`.

        ``store=None`` runs in a temporary directory that lives as long as the result.
        ``trackers`` (:mod:`lth.tracking`) log each level as it finishes.
        Re-running with the same store skips finished levels and resumes a level from its
        last checkpoint, giving the same numbers as an uninterrupted run.
        """
        keepalive = None
        if store is None:
            keepalive = tempfile.TemporaryDirectory(prefix="lth-")
            store = keepalive.name
        threads = torch.get_num_threads()
        try:
            if self.train.threads:
                torch.set_num_threads(self.train.threads)
            run = self._run(Path(store), progress, list(trackers))
        finally:
            torch.set_num_threads(threads)
        return Result(run.path, _keepalive=keepalive)

    def _run(self, store: Path, progress: bool | Progress, trackers: list[Any]) -> RunDir:
        model = copy.deepcopy(self.model).cpu()
        plan = self._plan(model)
        info = {**self.info, "name": self.config.name, "lth_version": __version__,
                "torch_version": torch.__version__, "data": self.data.summary(),
                "prunable": {n: model.get_parameter(n).numel() for n in plan.names},
                "output_layer": plan.output, "rates": plan.rates,
                "total_steps": plan.total_steps, "rewind_step": plan.rewind_step,
                **({"structure": {"units": plan.structure.describe(),
                                  "kept_whole": plan.structure.refused}}
                   if plan.structure is not None else {})}
        run = RunDir.open(store, self.config.name, self.identity(plan, model), info)
        if not run.file("theta0.safetensors").exists():
            save_tensors(run.file("theta0.safetensors"), plan.theta0)
        model = model.to(plan.device)
        data = self.data.to(plan.device)
        report = progress_bar(progress, self.config.n_levels, plan.total_steps,
                               plan.rewind_step)
        if trackers:
            saved = run.config()
            shown = {"settings": saved["identity"]["settings"],
                     **{k: v for k, v in saved.items() if k not in ("identity", "experiment")}}
            for tracker in trackers:
                tracker.start(run.path, shown)
        try:
            for level in range(self.config.n_levels + 1):
                if not run.is_done(level):
                    self._run_level(run, plan, model, data, level, report)
                    for tracker in trackers:
                        tracker.log_level(level, read_json(run.file("summary.json", level)),
                                          read_json(run.file("history.json", level)))
                elif report is not None:
                    report(level, plan.total_steps, plan.total_steps)
        finally:
            if hasattr(report, "close"):
                report.close()  # type: ignore[union-attr]
            for tracker in trackers:
                tracker.close()
        return run

    def _rewind_point(self, run: RunDir, plan: _Plan) -> dict[str, torch.Tensor]:
        if plan.rewind_step == 0:
            return plan.theta0
        return load_tensors(run.file("rewind.safetensors"))[0]

    def _criterion_init(self, run: RunDir, plan: _Plan, level: int) -> dict[str, torch.Tensor]:
        # "init" for the criteria = where the level's training effectively began:
        # the rewind point for the dense level, the reinitialised weights afterwards.
        if level == 0:
            return self._rewind_point(run, plan)
        return load_tensors(run.file("start.safetensors", level))[0]

    def _source(self, level: int) -> int:
        """The level whose trained weights give ``level`` its mask and kept weights."""
        return 0 if self.prune.schedule == "one_shot" else level - 1

    def _mask_for(self, run: RunDir, plan: _Plan, model: nn.Module, level: int) -> Mask:
        path = run.file("mask.safetensors", level)
        if path.exists():
            return Mask(load_tensors(path)[0], order=plan.names)
        if level == 0:
            mask = Mask.ones(model, plan.names)
        elif self.config.masks_from is not None:
            source = RunDir(self.config.masks_from).file("mask.safetensors", level)
            mask = Mask(load_tensors(source)[0], order=plan.names)
            if self.config.masks_from_mode != "same":
                prev = self._mask_for(run, plan, model, level - 1)
                mask = random_like(mask, prev, per_layer=self.config.masks_from_mode ==
                                   "random_layer",
                                   generator=generator(self.config.seed, "random-prune", level))
        else:
            source = self._source(level)
            prev = (Mask.ones(model, plan.names) if source == 0
                    else Mask(load_tensors(run.file("mask.safetensors", source))[0],
                              order=plan.names))
            final = load_tensors(run.file("final.safetensors", source))[0]
            mask = prune_step(self.prune, plan.structure, plan.groups, level, prev,
                             self._criterion_init(run, plan, source), final,
                             generator(self.config.seed, "prune", level))
        save_tensors(path, mask.tensors())
        return mask

    def _start_for(self, run: RunDir, plan: _Plan, model: nn.Module, level: int,
                   mask: Mask) -> dict[str, torch.Tensor]:
        path = run.file("start.safetensors", level)
        if path.exists():
            return load_tensors(path)[0]
        if level == 0:
            start = plan.theta0
        else:
            seed = self.config.seed
            source = self._source(level)
            base = (load_tensors(run.file("final.safetensors", source))[0]
                    if self.reinit.mode in KEEP_TRAINED else self._rewind_point(run, plan))
            start = reinitialize(
                self.reinit, mask, base, plan.theta0,
                fresh=lambda: fresh_draw(self.model, self.initializer,
                                         derive_seed(seed, "reinit-draw", level)),
                rng=lambda name: generator(seed, "reinit", level, name))
            if plan.structure is not None:  # bias and BatchNorm of removed units: zero
                set_state(model, start)
                plan.structure.zero_dead_(model, plan.structure.unit_mask(mask))
                start = get_state(model)
        save_tensors(path, start)
        return start

    def _search(self, run: RunDir, plan: _Plan, model: nn.Module, level: int,
                mask: Mask) -> early.Search | None:
        if not early.searching(self.earlybird, self.prune, self.config.n_levels, level):
            return None
        return early.make_search(
            self.earlybird, self.prune, plan.groups, plan.names, level, mask,
            lambda: self._criterion_init(run, plan, level), self.config.seed,
            spe=plan.span["steps_per_epoch"], after=plan.rewind_step, model=model,
            structure=plan.structure)

    def _finetune_lr(self, plan: _Plan) -> float:
        schedule = lr_function(self.train, plan.total_steps, plan.span["steps_per_epoch"])
        return schedule(plan.total_steps - 1)

    def _run_level(self, run: RunDir, plan: _Plan, model: nn.Module, data: Data,
                   level: int, report: Progress | None) -> None:
        t0 = time.perf_counter()
        mask = self._mask_for(run, plan, model, level)
        set_state(model, self._start_for(run, plan, model, level, mask))
        begin = 0 if level == 0 else plan.rewind_step
        span = Span(start=begin, end=plan.total_steps, **plan.span)
        late = level == 0 and plan.rewind_step > 0
        search = self._search(run, plan, model, level, mask)
        history = train_level(
            model, data, self.train, mask, span, seed=self.config.seed, level=level,
            checkpoints=run.checkpoints(level),
            snapshot_step=plan.rewind_step if late else None,
            on_snapshot=lambda s: save_tensors(run.file("rewind.safetensors"), s),
            progress=None if report is None else (lambda s: report(level, s, span.end)),
            fixed_lr=self._finetune_lr(plan) if level and self.reinit.mode == "finetune"
            else None, monitor=search)
        if report is not None and search is not None and search.drawn_step is not None:
            report(level, span.end, span.end)  # stopped early: the level is complete
        mask.check(model)
        save_tensors(run.file("final.safetensors", level), get_state(model))
        write_json(run.file("history.json", level), history)
        summary = summarize(level, mask, history, begin, time.perf_counter() - t0)
        done = {lv: read_json(run.file("summary.json", lv)) for lv in run.finished_levels()}
        done[level] = summary
        summary["steps_to_mask"] = (None if self.config.masks_from else  # another run's cost
                                    early.steps_to_mask(done, level, self.prune.schedule))
        if search is not None:
            write_json(run.file("earlybird.json", level), search.record())
            summary["earlybird_step"] = search.drawn_step
        write_json(run.file("summary.json", level), summary)  # last: marks the level done
        run.checkpoints(level).clear()
        csv = levels_frame([done[lv] for lv in sorted(done)]).to_csv(index=False)
        atomic_write_bytes(run.file("levels.csv"), csv.encode())
