"""A seeded fuzz of configuration values (issue 14): every key of every section set to
hostile values (wrong types, NaN and infinities, huge, empty, unicode, nested), unknown
keys, and ``--set`` forms. Validation and planning (model, data, rates, schedule: all a run
checks before training) may only answer with an LTHError — never another exception."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest

import lth
from lth.config import _SECTIONS, load_config, parse_override, read_toml
from lth.errors import LTHError

ROOT = Path(__file__).resolve().parents[1]
BASE = read_toml(ROOT / "configs" / "quickstart.toml")
BASE["train"].update({"duration": "20it", "eval_every": "10it"})

HOSTILE = [None, "", " ", "é", "名前", "\x00", "../..", "$^", "x" * 5000, 0, -1, 1, 7,
           2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 2**40, 0.0, -0.0, 1e-320, 0.5, 1.5,
           -0.5, 1e308, math.nan, math.inf, -math.inf, True, False, [], {}, [0], [1, 2],
           [2**40], [-1], [0.5, "a"], {"a": 1}, {"": None}, "0it", "0ep", "1e9ep",
           "100000000000it", "-5it", "3.5ep", "nanit", "cuda:99", "auto", [[[]]],
           {"1.weight": 0.5}, {"*": math.nan}]


def keys() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [("name",), ("seed",), ("n_levels",), ("masks_from",),
                                  ("masks_from_mode",), ("no_such_key",)]
    for section, cls in _SECTIONS.items():
        out += [(section, f.name) for f in dataclasses.fields(cls)]
        out.append((section, "unknown"))
    return out


def mutated(rng: random.Random, n_changes: int) -> dict:
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for _ in range(n_changes):
        key = rng.choice(keys())
        value = rng.choice(HOSTILE)
        node = config
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
    return config


def plan(cfg: lth.ExperimentConfig) -> None:
    lth.LotteryModel.from_config(cfg).check()


def only_lth_errors(config, fn, *args) -> None:
    """``fn(*args)`` returns or raises an LTHError; anything else fails, naming ``config``."""
    try:
        fn(*args)
    except LTHError:
        pass
    except Exception as exc:  # noqa: BLE001 - what the fuzz is looking for
        pytest.fail(f"{type(exc).__name__}: {exc}\nfor config {config!r}")


@pytest.mark.parametrize("seed", range(6))
def test_hostile_values_are_config_errors_or_valid(seed, digits):
    rng = random.Random(seed)
    for i in range(120):
        config = mutated(rng, 1 + i % 3)
        only_lth_errors(config, lth.ExperimentConfig.from_dict, config)
        try:
            cfg = lth.ExperimentConfig.from_dict(config)
        except LTHError:
            continue
        if cfg.data.name == "digits" and i % 4 == 0:  # plan (model, data, schedule) too
            only_lth_errors(config, plan, cfg)


SET_FORMS = ["train.lr=0.1", "train.lr = 0.1", "train.lr=", "=0.1", "train.lr",
             "train..lr=1", ".lr=1", "train.lr.=1", 'prune.layer_rates."1.weight"=0.5',
             "prune.layer_rates.'1.weight'=0.5", 'prune.layer_rates."1.weight=0.5',
             "name=\"a=b\"", "train.lr=nan", "train.lr=inf", "seed=99999999999999999999999",
             "model.hidden=[1,", "model.hidden=[]", "train=3", "train.lr.x=1", "名前=1",
             "train.lr=\x00", "a.b.c.d.e.f=1", "n_levels=-1", "train.duration='1e99ep'"]


@pytest.mark.parametrize("text", SET_FORMS)
def test_set_forms_give_config_errors_or_a_valid_config(text, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text((ROOT / "configs" / "quickstart.toml").read_text())
    only_lth_errors(text, parse_override, text)
    only_lth_errors(text, load_config, path, [text])


EXTREMES = {int: [0, -1, 1, 2**40, 2**62], float: [0.0, -1.0, 1e-320, 1.0, 1e308],
            str: ["", "é", "x" * 300, "0it"], bool: [True, False]}


def typed_extremes() -> list[tuple[tuple[str, ...], object]]:
    """Every key with values of its own type at the edges: these pass the type checks, so
    they reach the value checks and the plan."""
    import typing

    out = []
    top = {f.name: f.type for f in dataclasses.fields(lth.ExperimentConfig)}
    for name in ("seed", "n_levels"):
        out += [((name,), v) for v in EXTREMES[int]]
    for section, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            base = next((t for t in (bool, int, float, str) if t == tp or t in
                         typing.get_args(tp)), None)
            if base is not None:
                out += [((section, f.name), v) for v in EXTREMES[base]]
            elif typing.get_origin(tp) is tuple:
                out += [((section, f.name), v) for v in ([], [0], [2**40], ["x"])]
    assert top  # the experiment's own fields are covered above
    return out


@pytest.mark.parametrize("part", range(4))
def test_typed_extremes_plan_or_give_config_errors(part, digits):
    cases = typed_extremes()
    random.Random(0).shuffle(cases)
    for key, value in cases[part::4]:
        config = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
        node = config
        for p in key[:-1]:
            node = node.setdefault(p, {})
        node[key[-1]] = value
        try:
            cfg = lth.ExperimentConfig.from_dict(config)
        except LTHError:
            continue
        if cfg.data.name == "digits":
            only_lth_errors(config, plan, cfg)


@pytest.mark.parametrize("options", [
    {"hidden": v} for v in ([0], [2**40], [-1], [], [1.5], ["a"], 5, "x", [2**62], [True])
] + [{"name": "vgg11_bn", "width": w} for w in (0, 1e-9, 2**40, -1)])
def test_model_options_plan_or_give_config_errors(options, digits):
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    config["model"] = {**config["model"], **options}
    only_lth_errors(config, lambda: plan(lth.ExperimentConfig.from_dict(config)))
