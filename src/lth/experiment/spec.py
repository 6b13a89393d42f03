"""A run's resolved specification and the identities derived from it.

The specification is every setting that can change a number — the configuration minus a
short deny-list of speed-only keys — plus what the configuration only names: the model's
class, structure and initial weights, the data's content, the masks a run reuses. From it:

- ``run_id``: the run's directory (``<name>-<run_id>``);
- ``experiment_id``: the same without the seed and what follows from it: the runs of one
  experiment over seeds share it, and tables group by it;
- ``level0_key``: what the dense level 0 depends on, so that variants and controls of a
  session train it once.

``n_levels`` is left out unless the rates depend on it (the schedule says so) or the
last level differs from the others (early-bird searches every level but the last): levels
are a prefix, and a run with more levels continues the shorter one.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from ..config import MaskUpdatesConfig, TaskConfig
from ..pruning.criteria import QUANTILE_CRITERIA
from ..pruning.schedules import SCHEDULES
from ..store import FORMAT, short_hash
from ..tasks import CLASSIFICATION
from ..version import __version__

SPEED_ONLY = ("train.threads", "train.eval_batch_size", "train.checkpoint_every",
              "train.stack", "train.kernels")
"""Keys that change how fast or how safely a run goes, not its numbers (beyond the
floating-point reassociation of sums: thread count, stacked matrix products, sparse
kernels). A run made from a config keeps them in its ``config.json``; each level's
summary records which layers trained on sparse kernels (``sparse_kernels``)."""
ADDED_LATER = {"train.precision": "fp32", "prune.score_batches": 1, "prune.supermask": "none",
               "prune.supermask_lr": None}
"""Settings added after store format 2, left out of the specification at their defaults:
the runs made before them keep their identities (and directories)."""
ADDED_LATER.update({"prune.allocation": "uniform", "prune.nm": [2, 4]})


def left_out() -> dict[str, Any]:
    """What each setting a specification may leave out stands for (dotted keys): the
    defaults of :data:`ADDED_LATER` and of the ``[mask_updates]`` section."""
    sparse = {f"mask_updates.{k}": v for k, v in MaskUpdatesConfig().to_dict().items()}
    return {**ADDED_LATER, **sparse}


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree[part]
    del tree[leaf]


def level_count_matters(settings: dict[str, Any]) -> bool:
    """Whether ``n_levels`` changes the numbers of the levels: the schedule's rates follow
    from it, or an early-bird search runs in every level but the last."""
    schedule = settings["prune"]["schedule"]  # a stored one may no longer be registered
    return ((schedule in SCHEDULES and SCHEDULES[schedule].rates_depend_on_levels)
            or settings["earlybird"]["enabled"])


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """The number-changing settings of an experiment config (``ExperimentConfig.to_dict``
    without name, seed, masks_from, model and data, which the specification identifies by
    content)."""
    c = copy.deepcopy(config)
    for key in ("name", "seed", "masks_from", "model", "data"):
        c.pop(key, None)
    for dotted in SPEED_ONLY:
        _drop(c, dotted)
    if not c["earlybird"]["enabled"]:
        c["earlybird"] = {"enabled": False}  # its other keys change nothing then
    if not level_count_matters(c):
        del c["n_levels"]
    if c.get("task") == TaskConfig().to_dict():
        del c["task"]  # classification, as before tasks existed: the same identities
    if c.get("mask_updates") == MaskUpdatesConfig().to_dict():
        del c["mask_updates"]  # a fixed mask per level, as before mask updates existed
    for dotted, default in ADDED_LATER.items():
        section, key = dotted.split(".")
        if c[section].get(key) == default:
            del c[section][key]
    return c


def recipe(settings: dict[str, Any], initializer: str, model_class: str,
           model_structure: str, data_identity: str,
           task: dict[str, Any] | None = None) -> dict[str, Any]:
    """What an experiment is, apart from its seed and the runs it reuses masks from.
    ``task``: where the task's loss and metrics live (left out for classification)."""
    out = {"format": FORMAT, "lth": ".".join(__version__.split(".")[:2]),
           "settings": settings, "initializer": initializer,
           "model": {"class": model_class, "structure_sha256": model_structure},
           "data": data_identity}
    if task is not None and task != CLASSIFICATION.describe():
        out["task"] = task
    if settings["prune"]["criterion"] in QUANTILE_CRITERIA:
        out["quantile"] = "exact"  # lth 0.2.0 took it one weight too high at times
    return out


def structure_sha(model_repr: str) -> str:
    return hashlib.sha256(model_repr.encode()).hexdigest()


def spec(recipe_: dict[str, Any], *, seed: int, theta0_sha256: str,
         masks_from: dict[str, str] | None) -> dict[str, Any]:
    """The full specification of one run. ``masks_from``: the ``run_id`` and
    ``experiment_id`` of the run whose masks it reuses."""
    return {**recipe_, "seed": seed, "theta0_sha256": theta0_sha256, "masks_from": masks_from}


def run_id(spec_: dict[str, Any]) -> str:
    return short_hash(spec_)


def experiment_id(spec_: dict[str, Any]) -> str:
    """Shared by the seeds of one experiment: the spec without the seed, θ0 and the
    source run (only the source's experiment counts)."""
    rest = {k: v for k, v in spec_.items() if k not in ("seed", "theta0_sha256", "masks_from")}
    source = spec_.get("masks_from")
    return short_hash({**rest, "masks_from": source and source["experiment_id"]})


def level0_key(spec_: dict[str, Any], rewind_step: int, searches_level0: bool) -> str:
    """What the dense level 0 depends on: seed, θ0, data, training (and the early-bird
    search when it runs there); not the pruning criterion, reinit or masks source."""
    s = spec_["settings"]
    key = {k: spec_[k] for k in ("format", "lth", "seed", "theta0_sha256", "initializer",
                                 "model", "data")}
    key.update(train=s["train"], rewind_step=rewind_step)
    if "task" in s or "task" in spec_:  # what level 0 learns, beyond classification
        key.update(task=[s.get("task"), spec_.get("task")])
    if searches_level0:
        key.update(prune=s["prune"], earlybird=s["earlybird"], n_levels=s.get("n_levels"))
    return short_hash(key)
