from __future__ import annotations

import dataclasses
import sys
import textwrap

import pytest
import torch

import lth
from lth.data import DATASETS
from lth.execution import EXECUTORS, Sequential, make_executor
from lth.models import MODELS
from lth.pruning import CRITERIA, SCHEDULES, STRUCTURES, MaskStructure, Schedule
from lth.registry import EntryRef, Registry, portable_entries, restore
from lth.reinitialization import REINIT_MODES, rewind

TRAIN = {"duration": "30it", "eval_every": "10it", "batch_size": 32}


def square(x):
    return x * x


def cube(x):
    return x * x * x


def test_register_lookup_and_names():
    reg: Registry = Registry("shape", workers=False)
    assert reg.register(square) is square
    reg.register(name="third")(cube)  # decorator with a name
    assert reg["square"](3) == 9 and reg.get("third")(2) == 8
    assert "square" in reg and "circle" not in reg and [1] not in reg
    assert reg.names() == ("square", "third") == tuple(reg) and len(reg) == 2
    with pytest.raises(lth.ConfigError, match="unknown shape 'squre'; did you mean 'square'"):
        reg["squre"]
    with pytest.raises(lth.ConfigError, match="has no __name__; give one with name="):
        reg.register(3)


def test_a_taken_name_needs_replace_but_a_redefinition_replaces_itself():
    reg: Registry = Registry("shape", workers=False)
    reg.register(square)
    reg.register(square)  # the same object again: nothing to do
    with pytest.raises(lth.ConfigError, match=r"shape 'square' is already registered "
                                              r"\(tests.test_registry.square\).*replace=True"):
        reg.register(cube, name="square")
    reg.register(cube, name="square", replace=True)
    assert reg["square"] is cube

    def again(x):  # the same function defined anew, as a re-run notebook cell does
        return x
    first = again
    reg.register(first)

    def again(x):  # noqa: F811
        return -x
    reg.register(again)
    assert reg["again"] is again


def test_builtin_and_user_entries():
    reg: Registry = Registry("shape", workers=False)
    reg.register(square)
    reg.mark_builtin()
    assert reg.user_entries() == {}
    reg.register(cube)
    reg.register(cube, name="square", replace=True)  # a built-in name replaced: the user's
    assert reg.user_entries() == {"cube": cube, "square": cube}
    del reg["cube"]
    assert "cube" not in reg


@pytest.mark.parametrize("registry", [MODELS, DATASETS, CRITERIA, REINIT_MODES, SCHEDULES,
                                      EXECUTORS])
def test_every_registry_is_one_type_and_lth_entries_are_builtin(registry):
    assert isinstance(registry, Registry) and len(registry) > 0
    assert registry.user_entries() == {}  # nothing for workers to import beyond lth
    assert sorted(registry) == sorted(registry.names())


def test_existing_names_keep_working():
    assert set(REINIT_MODES) >= {"rewind", "jitter", "lr_rewind", "finetune"}
    assert list(SCHEDULES) == ["geometric", "target", "linear", "one_shot"]
    assert list(EXECUTORS) == ["sequential", "local", "ray"]
    assert isinstance(make_executor("sequential", 4), Sequential)
    with pytest.raises(lth.ConfigError, match="unknown executor 'lcoal'; did you mean 'local'"):
        make_executor("lcoal")
    with pytest.raises(lth.ConfigError, match="schedule.*did you mean 'linear'"):
        lth.pruning.scheduled_density("liner", 0.2, 1)


def test_a_custom_dataset_and_reinit_mode_are_used_by_name(digits):
    def tiny_digits(*, val_size: float = 0.1, split_seed: int = 0) -> lth.Data:
        return digits
    lth.register_dataset(tiny_digits)

    def negate(s):
        return -s.rewind
    lth.register_reinit(negate)
    try:
        assert lth.load_dataset("tiny_digits") is digits
        assert lth.ReinitConfig(mode="negate").mode == "negate"
    finally:
        del DATASETS["tiny_digits"], REINIT_MODES["negate"]


# ---- user entries in worker processes -------------------------------------------------

MODULE = "lth_test_user_criteria"
CRITERION_SOURCE = """
import torch

import lth


@lth.register_criterion
def keep_first(s):
    # Higher = keep: the lowest flat indices survive, a pattern no built-in criterion gives.
    return -torch.arange(s.final.numel(), dtype=torch.float).view_as(s.final)
"""


@pytest.fixture
def user_criterion(tmp_path, monkeypatch):
    """A criterion registered from an importable module, as a user's own .py file is.

    Only sys.path names its folder (no PYTHONPATH): spawned workers inherit sys.path.
    """
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(CRITERION_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    module = __import__(MODULE)
    try:
        yield module.keep_first
    finally:
        del CRITERIA["keep_first"]
        sys.modules.pop(MODULE, None)


def test_portable_entries_describe_user_entries_and_restore_registers_them(user_criterion):
    ref = EntryRef("criterion", "keep_first", MODULE, "keep_first")
    assert portable_entries() == (ref,)
    del CRITERIA["keep_first"]
    restore([ref])  # as a worker does
    assert CRITERIA["keep_first"] is user_criterion
    restore([ref])  # twice: nothing changes
    with pytest.raises(lth.ConfigError, match="a worker process cannot import criterion "
                                              "'gone'.*PYTHONPATH"):
        restore([EntryRef("criterion", "gone", MODULE, "no_such_function")])


def _assert_kept_first(result):
    for row in result.trials().itertuples():
        assert row.status == "done", row
        keep = lth.Result(row.run_dir).mask(1)["1.weight"].flatten()
        n = int(keep.sum())
        assert 0 < n < keep.numel() and bool(keep[:n].all())


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_criterion_from_an_importable_module_runs_in_workers(user_criterion, executor,
                                                               digits, tmp_path):
    if executor == "ray":
        pytest.importorskip("ray")
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(16,))
    session = lth.LotterySession(model, digits, train=TRAIN, levels=1, seeds=[0, 1],
                                 variants={"first": {"prune": {"criterion": "keep_first"}}})
    _assert_kept_first(session.run(store=tmp_path / "s", executor=executor, workers=2))


NETWORK_MODULE = "lth_test_user_network_criteria"
NETWORK_SOURCE = """
import torch

import lth
from lth.pruning.network import NetworkCriterion


def first_weights(inputs):
    # Scores the network's weights: the lowest flat indices of each layer survive.
    return {n: -torch.arange(t.numel(), dtype=torch.float).view_as(t)
            for n, t in inputs.mask.items()}


lth.register_criterion(NetworkCriterion(first_weights, rounds=2), name="keep_first_net")
"""


@pytest.fixture
def user_network_criterion(tmp_path, monkeypatch):
    """A network criterion (an object wrapping a function) from an importable module."""
    (tmp_path / f"{NETWORK_MODULE}.py").write_text(textwrap.dedent(NETWORK_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    __import__(NETWORK_MODULE)
    try:
        yield CRITERIA["keep_first_net"]
    finally:
        del CRITERIA["keep_first_net"]
        sys.modules.pop(NETWORK_MODULE, None)


def test_a_network_criterion_travels_to_workers_by_value(user_network_criterion, digits,
                                                         tmp_path):
    (ref,) = portable_entries()
    del CRITERIA["keep_first_net"]
    restore([ref])  # as a worker does: the same score function, the same rounds
    again = CRITERIA["keep_first_net"]
    assert again.score is user_network_criterion.score and again.rounds == 2
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(16,))
    session = lth.LotterySession(model, digits, train=TRAIN, levels=1, seeds=[0, 1],
                                 variants={"first": {"prune": {"criterion": "keep_first_net"}}})
    _assert_kept_first(session.run(store=tmp_path / "s", executor="local", workers=2))


def test_a_network_criterion_wrapping_a_main_function_is_refused(digits):
    from lth.pruning.network import NetworkCriterion

    def score(inputs):
        return {}

    score.__module__, score.__qualname__ = "__main__", "score"
    lth.register_criterion(NetworkCriterion(score), name="main_net")
    try:
        with pytest.raises(lth.ConfigError, match="criterion 'main_net': it refers to "
                                                  "__main__.score.*defined in __main__"):
            portable_entries()
    finally:
        del CRITERIA["main_net"]


def keep_last(s):
    return torch.arange(s.final.numel(), dtype=torch.float).view_as(s.final)


@pytest.fixture
def main_criterion():
    """A criterion as if defined in a script run directly, or in a notebook."""
    keep_last.__module__ = "__main__"
    lth.register_criterion(keep_last)
    try:
        yield keep_last
    finally:
        del CRITERIA["keep_last"]
        keep_last.__module__ = __name__


def test_an_entry_workers_cannot_import_is_refused_when_a_pool_is_created(main_criterion,
                                                                          digits, tmp_path):
    fix = r"criterion 'keep_last': it is defined in __main__.*executor='sequential'"
    with pytest.raises(lth.ConfigError, match=fix):
        make_executor("local", 2)
    if "ray" in sys.modules or _has_ray():
        with pytest.raises(lth.ConfigError, match=fix):
            make_executor("ray", 1)  # refused before Ray starts
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(16,))
    session = lth.LotterySession(model, digits, train=TRAIN, levels=1, seeds=[0],
                                 variants={"last": {"prune": {"criterion": "keep_last"}}})
    with pytest.raises(lth.ConfigError, match=fix):
        session.run(store=tmp_path, executor="local", workers=2)
    # In this process it needs nothing.
    result = session.run(store=tmp_path, executor="sequential")
    keep = lth.Result(result.trials().run_dir[0]).mask(1)["1.weight"].flatten()
    n = int(keep.sum())
    assert bool(keep[-n:].all()) and not bool(keep[:-n].any())


def test_lambdas_and_local_functions_are_refused_with_their_reason():
    def local(s):
        return s.final

    lth.register_criterion(local)
    lth.register_criterion(lambda s: s.final, name="anonymous")
    try:
        with pytest.raises(lth.ConfigError) as err:
            portable_entries()
        message = str(err.value)
        assert "criterion 'local': it is a lambda or a function defined inside" in message
        assert "criterion 'anonymous': it is a lambda" in message
    finally:
        del CRITERIA["local"], CRITERIA["anonymous"]


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


# ---- mode objects ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Halving(Schedule):
    def density(self, rate, level):
        return 0.5 ** level


def halving(rate, level):
    return 0.5 ** level


def negated(s):
    return -s.rewind


def test_a_mode_object_cannot_take_a_built_in_name_unasked():
    with pytest.raises(lth.ConfigError, match="schedule 'geometric' is already registered"):
        SCHEDULES.register(Halving(), name="geometric")
    with pytest.raises(lth.ConfigError, match="reinit mode 'lr_rewind' is already registered"):
        lth.register_reinit(rewind, name="lr_rewind")  # the same values, other flags
    with pytest.raises(lth.ConfigError, match="mask structure 'unit' is already registered"):
        STRUCTURES.register(MaskStructure(), name="unit")
    assert SCHEDULES["geometric"].rates_depend_on_levels is False
    assert REINIT_MODES["lr_rewind"].keeps_trained
    SCHEDULES.register(Halving(), name="halving_obj")
    try:
        SCHEDULES.register(Halving(), name="halving_obj")  # the same code again: replaces
    finally:
        del SCHEDULES["halving_obj"]


def test_plain_functions_registered_as_schedule_and_reinit_mode_run(digits):
    SCHEDULES.register(halving)
    REINIT_MODES.register(negated)
    try:
        model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                                 hidden=[8])
        run = lth.LotteryModel(model, digits, train={"duration": "20it", "eval_every": "20it"},
                               prune={"schedule": "halving"}, reinit={"mode": "negated"},
                               levels=2).run(store=None)
        assert run.table().pct_remaining.round(1).tolist() == [100.0, 50.0, 25.0]
        start, theta0 = run.weights(1, "start"), run.run.theta0()
        kept = run.mask(1)["1.weight"]
        assert torch.equal(start["1.weight"][kept], -theta0["1.weight"][kept])
    finally:
        del SCHEDULES["halving"], REINIT_MODES["negated"]
    with pytest.raises(lth.ConfigError, match="give an instance of .*Schedule or a function"):
        SCHEDULES.register(0.5, name="half")
