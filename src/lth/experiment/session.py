"""``LotterySession`` (variants from the same initial weights) and ``LotteryRobust`` (one
experiment over seeds), both groups of trials (see :mod:`lth.experiment.group`).

Every variant of a session at a given seed starts from the identical θ0 and, unless the
variant changes it, the same data order: both derive from the seed alone. Controls are
variants too: ``random_reinit`` (the masks of variant ``of``, fresh weights),
``random_prune`` (random masks with ``of``'s per-layer — or, ``scope = "global"``, total —
counts, survivors rewound) and ``same_mask`` (``of``'s masks as they are, survivors reset
as the base says: is a GMP or RigL mask a winning ticket?), each run after ``of`` finishes,
level by level on its masks, held fixed, for as many levels as ``of`` unless it says.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig, MaskUpdatesConfig, raise_problems
from ..config_text import parse_override, read_toml, set_dotted
from ..data import Data
from ..errors import ConfigError, did_you_mean
from .group import TrialGroup
from .lottery_model import LotteryModel
from .trials import Trial

CONTROLS = ("random_reinit", "random_prune", "same_mask")
_SAFE = re.compile(r"^[A-Za-z0-9_.=,+-]+$")


def _merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k),
                                                                            dict) else v
    return out


def _control(name: str, spec: dict, variants: Mapping) -> tuple[dict, str | None, str]:
    """Split a variant's control keys off: (overrides, masks_of, masks_from_mode)."""
    spec = dict(spec)
    control, of = spec.pop("control", None), spec.pop("of", None)
    scope = spec.pop("scope", "layer")
    if control is None:
        if of is not None:
            raise ConfigError(f"variants.{name}.of is only used with control = ...")
        return spec, None, "same"
    if control not in CONTROLS:
        raise ConfigError(f"variants.{name}.control = {control!r}{did_you_mean(control, CONTROLS)}"
                          f"; allowed: {', '.join(CONTROLS)}")
    if of not in variants or variants[of].get("control"):
        raise ConfigError(f"variants.{name}.of = {of!r} must name a variant that is not a "
                          f"control; variants: {', '.join(variants)}")
    # A control trains the masks it is given, fixed (whatever the base's mask updates), as
    # many levels as ``of`` unless it says otherwise.
    spec = _merge({"mask_updates": MaskUpdatesConfig().to_dict()}, spec)
    for key in ("n_levels", "levels"):
        if key in variants[of] and "n_levels" not in spec and "levels" not in spec:
            spec[key] = variants[of][key]
    if control == "random_reinit":
        return _merge(spec, {"reinit": {"mode": "random"}}), of, "same"
    if control == "same_mask":  # its masks, fixed, the survivors reset as the base says
        return spec, of, "same"
    if scope not in ("layer", "global"):
        raise ConfigError(f"variants.{name}.scope = {scope!r}; allowed: layer, global")
    return spec, of, f"random_{scope}"


def expand_variants(variants: Mapping[str, Mapping] | None, grid: Mapping[str, Sequence] | None
                    ) -> dict[str, dict]:
    """Named variants plus the cartesian product of ``grid`` (dotted key -> values)."""
    if variants is not None and (not isinstance(variants, Mapping) or not all(
            isinstance(v, Mapping) for v in variants.values())):
        raise ConfigError("variants must be tables: [variants.NAME] with overrides inside")
    if grid is not None and not isinstance(grid, Mapping):
        raise ConfigError('grid must be a table of "section.key" = [values]')
    out = {k: dict(v) for k, v in (variants or {}).items()}
    if grid:
        keys = list(grid)
        for key, values in grid.items():
            if not isinstance(values, list | tuple) or not values:
                raise ConfigError(f"grid.{key} must be a non-empty list of values")
        for combo in itertools.product(*(grid[k] for k in keys)):
            name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, combo,
                                                                            strict=True))
            tree: dict = {}
            for k, v in zip(keys, combo, strict=True):
                set_dotted(tree, k, v)
            if name in out:
                raise ConfigError(f"grid variant {name!r} repeats a grid value or a named "
                                  "variant; make the values (and names) distinct")
            out[name] = tree
    if not out:
        raise ConfigError("a session needs [variants.NAME] tables or a [grid]; e.g. "
                          "[variants.ticket] (empty: the base) and [variants.control] with "
                          "control = 'random_reinit', of = 'ticket'")
    for name in out:
        if not _SAFE.match(name):
            raise ConfigError(f"variant name {name!r} may use letters, digits and _.=,+- only")
    return out


def _seed_list(seeds: Iterable[int]) -> list[int]:
    out = list(dict.fromkeys(int(s) for s in seeds))
    if not out or any(s < 0 for s in out):
        raise ConfigError(f"seeds = {out}; give one or more seeds >= 0")
    return out


class LotterySession(TrialGroup):
    """Variants of one experiment, all from the same initial weights, over ``seeds``.

    >>> import lth
    >>> data = lth.load_digits()
    >>> model = lth.create_model("mlp", input_shape=data.input_shape, num_classes=10)
    >>> session = lth.LotterySession(model, data, train={"duration": "100it"}, levels=1,
    ...     variants={"ticket": {}, "control": {"control": "random_reinit", "of": "ticket"}})
    >>> sorted(session.run(store=None).table().experiment.unique())
    ['control', 'ticket']
    """

    kind = "session"

    def __init__(self, model: Any, data: Data | None = None, *,
                 variants: Mapping[str, Mapping] | None = None,
                 grid: Mapping[str, Sequence] | None = None, seeds: Iterable[int] = (0,),
                 name: str = "session", **experiment: Any):
        base = model if isinstance(model, LotteryModel) else LotteryModel(
            model, data, name=name, **experiment)
        specs = expand_variants(variants, grid)
        trials = []
        for vname, spec in specs.items():
            over, of, mode = _control(vname, spec, specs)
            exp = _apply(base, over, vname).replace(name=vname, masks_from_mode=mode)
            trials += [Trial(f"{vname}-s{s}", vname, s, experiment=exp,
                             masks_of=f"{of}-s{s}" if of else None) for s in _seed_list(seeds)]
        super().__init__(name, trials)

    @classmethod
    def from_config(cls, path: str | Path, overrides: Sequence[str] = (),
                    seeds: Iterable[int] | None = None) -> LotterySession:
        """Read a session TOML: ``name``, ``seeds``, ``[base]`` (an experiment config, or
        ``base = "file.toml"``), ``[variants.NAME]`` overrides and/or a ``[grid]``."""
        path = Path(path)
        doc = read_toml(path, "session file")
        known = ("name", "seeds", "base", "variants", "grid")
        for key in doc:
            if key not in known:
                raise ConfigError(f"{path}: unknown key {key!r}" + did_you_mean(
                    key, known, then=f"known: {', '.join(known)}"))
        base = doc.get("base", {})
        if isinstance(base, str):
            base = read_toml(path.parent / base, "session base file")
        elif not isinstance(base, dict):
            raise ConfigError(f"{path}: base = {base!r}; give a [base] table or the path of an "
                              "experiment TOML, e.g. base = \"lenet.toml\"")
        file_seeds = doc.get("seeds")
        if isinstance(file_seeds, str):
            file_seeds = parse_seeds(file_seeds)
        elif file_seeds is not None and (not isinstance(file_seeds, list) or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in file_seeds)):
            raise ConfigError(f"{path}: seeds = {file_seeds!r}; give a list like [0, 1, 2] or "
                              'a string like "0-4"')
        for text in overrides:
            set_dotted(base, *parse_override(text))
        name = doc.get("name", path.stem)
        base_cfg = ExperimentConfig.from_dict({**base, "name": name})
        specs = expand_variants(doc.get("variants"), doc.get("grid"))
        trials, problems = [], []
        seed_list = _seed_list(seeds if seeds is not None else file_seeds or [base_cfg.seed])
        for vname, spec in specs.items():
            over, of, mode = _control(vname, spec, specs)
            merged = _merge(base_cfg.to_dict(), over)
            cfg, got = ExperimentConfig.parse(merged, f"variants.{vname}.")
            problems += got
            if cfg is None:
                continue
            cfg = dataclasses.replace(cfg, name=vname, masks_from_mode=mode)
            trials += [Trial(f"{vname}-s{s}", vname, s, config=cfg,
                             masks_of=f"{of}-s{s}" if of else None) for s in seed_list]
        raise_problems(problems)
        session = cls.__new__(cls)
        TrialGroup.__init__(session, name, trials, {"source": str(path)})
        return session


def _apply(base: LotteryModel, over: Mapping, vname: str) -> LotteryModel:
    known = {"train", "prune", "reinit", "mask_updates", "levels", "initializer", "bias_init",
             "n_levels"}
    for key in over:
        if key not in known:
            raise ConfigError(f"variants.{vname}.{key}: unknown" + did_you_mean(
                key, known, then=f"known: {', '.join(sorted(known))}, control, of, scope"))
    changes: dict[str, Any] = {}
    for section in ("train", "prune", "reinit", "mask_updates"):
        if section in over:
            current = getattr(base, section).to_dict()
            changes[section] = _merge(current, over[section])
    if "levels" in over or "n_levels" in over:
        changes["levels"] = over.get("levels", over.get("n_levels"))
    for key in ("initializer", "bias_init"):
        if key in over:
            changes[key] = over[key]
    return base.replace(**changes)


class LotteryRobust(LotterySession):
    """One experiment repeated over seeds (own θ0, signs and data order per seed), with
    statistics per level and per evaluation step. Adding seeds later extends the same run.
    """

    kind = "robust"

    def __init__(self, model: Any, data: Data | None = None, *, seeds: Iterable[int] = range(5),
                 name: str = "robust", **experiment: Any):
        super().__init__(model, data, variants={name: {}}, seeds=seeds, name=name, **experiment)

    @classmethod
    def from_config(cls, path: str | Path, overrides: Sequence[str] = (),  # type: ignore[override]
                    seeds: Iterable[int] | None = None) -> LotteryRobust:
        """An experiment TOML (as for ``lth run``) over ``seeds`` (default: its own seed)."""
        from ..config import load_config

        cfg = load_config(path, overrides)
        seed_list = _seed_list(seeds if seeds is not None else [cfg.seed])
        trials = [Trial(f"{cfg.name}-s{s}", cfg.name, s, config=cfg) for s in seed_list]
        robust = cls.__new__(cls)
        TrialGroup.__init__(robust, cfg.name, trials, {"source": str(path)})
        return robust


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,3,7"``; ``"2"``.

    >>> parse_seeds("0-2,7")
    [0, 1, 2, 7]
    """
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: use a range like 0-4, a list like 0,3,7, or "
                          "one seed") from None
    return _seed_list(out)
