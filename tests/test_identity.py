"""One run identity: every number-changing setting is in it, speed-only keys are not, and
the same experiment gets the same directory however it is given."""

from __future__ import annotations

import dataclasses

import pytest

import lth
from lth.config import ExperimentConfig
from lth.experiment import LotterySession
from lth.experiment.spec import SPEED_ONLY, recipe, run_id, settings_of, spec

from .conftest import FAST_TRAIN, states_equal


def _flipped(value):
    """Another value of the same kind (the identity must not care whether it is valid)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.125
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    if isinstance(value, dict):
        return {**value, "other": 0.5}
    if value is None:
        return 0.5
    raise TypeError(f"no flip for {value!r}")


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("layer_rates",):
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted, value


def _run_id(config: dict) -> str:
    r = recipe(settings_of(config), "default", "M", "structure", "data")
    return run_id(spec(r, seed=config["seed"], theta0_sha256="t0", masks_from=None))


def _set(tree: dict, dotted: str, value) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tree.items()}
    *parents, leaf = dotted.split(".")
    node = out
    for part in parents:
        node[part] = dict(node[part])
        node = node[part]
    node[leaf] = value
    return out


# Settings the identity holds only under a condition (documented in lth.experiment.spec).
CONDITIONAL = {"n_levels": ("prune.schedule", "target"),
               **{f"earlybird.{f.name}": ("earlybird.enabled", True)
                  for f in dataclasses.fields(lth.EarlyBirdConfig) if f.name != "enabled"}}
NOT_SETTINGS = ("name", "masks_from", "model", "data")  # identified by content instead


def test_every_setting_changes_the_identity_except_the_speed_only_ones():
    base = ExperimentConfig().to_dict()
    leaves = [(k, v) for k, v in _leaves(base) if k.split(".")[0] not in NOT_SETTINGS]
    assert len(leaves) > 40  # every section's every key
    for dotted, value in leaves:
        config = base
        if dotted in CONDITIONAL:
            gate, on = CONDITIONAL[dotted]
            assert _run_id(_set(base, dotted, _flipped(value))) == _run_id(base), dotted
            config = _set(base, gate, on)
        changed = _run_id(_set(config, dotted, _flipped(value))) != _run_id(config)
        assert changed == (dotted not in SPEED_ONLY), dotted


def test_model_data_and_masks_source_are_identified_by_content():
    r = recipe(settings_of(ExperimentConfig().to_dict()), "default", "M", "s", "d")
    one = spec(r, seed=0, theta0_sha256="a", masks_from=None)
    for changed in (spec(recipe(settings_of(ExperimentConfig().to_dict()), "default", "M",
                                "s", "other data"), seed=0, theta0_sha256="a",
                         masks_from=None),
                    spec(r, seed=0, theta0_sha256="other θ0", masks_from=None),
                    spec(r, seed=0, theta0_sha256="a",
                         masks_from={"run_id": "x", "experiment_id": "y"})):
        assert run_id(changed) != run_id(one)


def test_random_layer_control_does_not_reuse_the_same_masks_run(digits, small_mlp, tmp_path):
    ticket = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1,
                              name="ticket").run(store=tmp_path)
    same = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1, name="control",
                            masks_from=ticket).run(store=tmp_path)
    shuffled = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1, name="control",
                                masks_from=ticket, masks_from_mode="random_layer"
                                ).run(store=tmp_path)
    assert same.path != shuffled.path
    assert same.mask(1) == ticket.mask(1)
    assert shuffled.mask(1) != ticket.mask(1)
    assert shuffled.mask(1).kept() == ticket.mask(1).kept()


def test_python_toml_and_cli_runs_share_a_directory(digits, tmp_path, capsys):
    toml = tmp_path / "e.toml"
    toml.write_text('name = "e"\nn_levels = 1\n[model]\nname = "mlp"\nhidden = [16]\n'
                    '[data]\nname = "digits"\n[train]\nduration = "60it"\n'
                    'eval_every = "20it"\nbatch_size = 32\nthreads = 2\n')
    from lth.cli import main

    assert main(["run", str(toml), "--store", str(tmp_path / "s"), "--quiet"]) == 0
    (cli_dir,) = (tmp_path / "s").iterdir()
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=[16])
    py = lth.LotteryModel(model, digits, train={**FAST_TRAIN, "eval_batch_size": 64},
                          levels=1, name="e").run(store=tmp_path / "s")
    assert py.path == cli_dir  # threads and eval_batch_size change no number


def test_session_from_python_and_toml_is_one_group(digits, tmp_path):
    (tmp_path / "base.toml").write_text(
        'n_levels = 1\n[model]\nname = "mlp"\nhidden = [16]\n[data]\nname = "digits"\n'
        '[train]\nduration = "60it"\neval_every = "20it"\nbatch_size = 32\n')
    (tmp_path / "s.toml").write_text(
        'name = "s"\nbase = "base.toml"\n[variants.ticket]\n[variants.move]\n'
        'prune.criterion = "movement"\n')
    toml = LotterySession.from_config(tmp_path / "s.toml").run(store=tmp_path / "st")
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=[16])
    py = LotterySession(model, digits, name="s", train=FAST_TRAIN, levels=1,
                        variants={"ticket": {}, "move": {"prune": {"criterion": "movement"}}}
                        ).run(store=tmp_path / "st")
    assert py.path == toml.path
    assert sorted(py.trials().run_dir) == sorted(toml.trials().run_dir)


def test_more_levels_continue_the_shorter_run(digits, small_mlp, tmp_path):
    short = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1).run(store=tmp_path)
    before = {p: p.read_bytes() for p in short.path.glob("level_*/*")}
    longer = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=3).run(store=tmp_path)
    assert longer.path == short.path and longer.levels == [0, 1, 2, 3]
    assert {p: p.read_bytes() for p in before} == before  # levels 0-1 not retrained
    straight = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=3).run(
        store=tmp_path / "straight")
    for level in range(4):
        assert states_equal(straight.weights(level), longer.weights(level))


def test_target_schedule_keeps_the_level_count_in_the_identity(digits, small_mlp):
    prune = {"schedule": "target", "target_sparsity": 0.5}
    a = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, prune=prune, levels=1).spec()
    b = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, prune=prune, levels=2).spec()
    assert run_id(a) != run_id(b)


@pytest.mark.parametrize("seed", [0, 1])
def test_spec_names_the_run_directory(digits, small_mlp, tmp_path, seed):
    exp = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=0, seed=seed)
    assert exp.run(store=tmp_path).path.name == f"experiment-{run_id(exp.spec())}"
