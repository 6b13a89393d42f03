"""Gradual magnitude pruning, SET and RigL (lth.sparse) against direct computations: the
cubic counts at every pruning step, RigL's drop and grow sets by hand, regrown weights from
0 with fresh optimizer state, exact counts at every update, the level's files and costs,
resume, and the configuration's refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import lth
from lth.config import ExperimentConfig, MaskUpdatesConfig, TrainConfig
from lth.errors import ConfigError
from lth.masks import Mask, prunable_names
from lth.pruning.criteria import CRITERIA
from lth.sparse.dropgrow import DropAndGrow, update_fractions
from lth.sparse.gradual import GradualPruning
from lth.store import RunDir
from lth.train import MaskUpdates, Span, train_level

from .conftest import FAST_TRAIN, states_equal
from .test_mask_updates import Saves
from .test_train import pruned


class Recorded(MaskUpdates):
    """``inner`` as it is, keeping what each update saw and gave."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []
        self.gradients = inner.gradients

    def due(self, step):
        return self.inner.due(step)

    def update(self, step, weights, mask, gradients):
        new = self.inner.update(step, weights, mask, gradients)
        self.seen.append((step, {n: w.detach().clone() for n, w in weights.items()}, mask,
                          None if gradients is None else
                          {n: g.clone() for n, g in gradients.items()}, new))
        return new


def round_half_up(x):
    return math.floor(x + 0.5 + 1e-9)


# -- gradual magnitude pruning --------------------------------------------------------------
def test_gradual_pruning_follows_the_cubic_schedule_at_every_step(digits, small_mlp):
    names = prunable_names(small_mlp)
    start = Mask.ones(small_mlp, names)
    sizes = start.sizes()
    final = {n: round_half_up(0.1 * sizes[n]) for n in names}
    steps = [10, 20, 30, 40, 50]
    inner = GradualPruning(steps, [((n,), sizes[n], final[n]) for n in names], start,
                           CRITERIA["large_final"], {n: p.detach().clone() for n, p in
                                                     small_mlp.named_parameters()},
                           seed=0, level=1)
    updates = Recorded(inner)
    train_level(small_mlp, digits, TrainConfig(batch_size=32), start,
                Span(0, 70, 30, 10, 10**6), seed=0, level=1, mask_updates=updates)
    assert [s for s, *_ in updates.seen] == steps
    n = len(steps)
    for j, (step, weights, before, _, new) in enumerate(updates.seen, start=1):
        for name in names:
            expected = round_half_up(final[name] + (sizes[name] - final[name])
                                     * (1 - j / n) ** 3)
            assert new.kept()[name] == expected, (step, name)
            # the survivors of largest magnitude among those alive before the step
            alive = weights[name][before[name]].abs()
            kept = weights[name][new[name]].abs()
            assert new[name].logical_and(before[name]).equal(new[name])
            assert kept.min() >= alive.sort(descending=True).values[expected - 1]
    weights = dict(small_mlp.named_parameters())
    for name in names:  # pruned weights are exactly 0 after training
        assert not weights[name][~updates.seen[-1][-1][name]].any()


def run_method(digits, tmp_path, method, *, levels=1, prune=None, **extra):
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(32, 16))
    train = {**FAST_TRAIN, "duration": "90it", "eval_every": "30it",
             "checkpoint_every": "20it"}
    exp = lth.LotteryModel(model, digits, train=train, levels=levels,
                           prune={"rate": 0.8, **(prune or {})},
                           mask_updates={"method": method, "every": "10it", **extra})
    return exp, exp.run(store=tmp_path)


def test_a_gmp_run_keeps_its_masks_and_costs(digits, tmp_path):
    exp, result = run_method(digits, tmp_path, "gmp", levels=2)
    run = RunDir(result.path)
    table = result.table().set_index("level")
    # level 1 starts from the dense mask and ends at 20%; level 2 (a cycle) from there to 4%
    assert Mask(run.level(1).tensors("mask_start")).density() == 1.0
    assert result.mask(1).density() == pytest.approx(0.2, abs=0.01)
    assert Mask(run.level(2).tensors("mask_start")) == result.mask(1)
    assert result.mask(2).is_subset_of(result.mask(1))
    assert list(table["mask_updates"]) == [0, 6, 6]  # 10..60: end = 0.75 of 90 steps
    assert list(table["mask_turnover"]) == [0.0, 0.0, 0.0]  # pruning only removes
    # the weights it pruned stay 0; the level's final mask is its mask
    final = result.weights(2)
    for n, keep in result.mask(2).items():
        assert not final[n][~keep].any()
    # costs: its own training chose its mask (and level 1's training chose level 2's)
    steps = table["train_steps"]
    assert table.loc[1, "steps_to_mask"] == table.loc[1, "budget_steps"] == steps[1]
    assert table.loc[2, "budget_steps"] == steps[1] + steps[2]
    assert table.loc[2, "budget_flops"] == table.loc[1, "train_flops"] + table.loc[
        2, "train_flops"]
    assert table.loc[1, "train_flops"] < table.loc[0, "train_flops"]


# -- RigL and SET -----------------------------------------------------------------------------
def test_rigl_drops_the_smallest_and_grows_the_largest_gradients_by_hand():
    w = torch.tensor([[5.0, -1.0, 0.0, 3.0], [0.0, 0.5, 0.0, -2.0]])
    keep = torch.tensor([[True, True, False, True], [False, True, False, True]])
    g = torch.tensor([[0.1, 9.0, 0.3, 0.0], [0.7, 0.2, 0.05, 0.1]])
    rigl = DropAndGrow({100: 0.4}, [("w",)], "gradient", seed=0, level=1)
    new = rigl.update(100, {"w": w}, Mask({"w": keep}), {"w": g})
    # 5 alive, round(0.4 * 5) = 2 leave: 0.5 and -1.0 (smallest |w|); 2 enter among the
    # previously pruned (0, 2), (1, 0), (1, 2): those with |g| 0.7 and 0.3. The dropped
    # -1.0 has the largest gradient (9.0), but a just-dropped weight is not taken back.
    assert new["w"].tolist() == [[True, False, True, True], [True, False, False, True]]
    assert new.kept() == {"w": 5}
    s = DropAndGrow({100: 0.4}, [("w",)], "random", seed=0, level=1)
    swapped = s.update(100, {"w": w}, Mask({"w": keep}), None)
    assert swapped.kept() == {"w": 5}
    assert not swapped["w"][0, 1] and not swapped["w"][1, 1]  # SET drops by magnitude too
    assert s.update(100, {"w": w}, Mask({"w": keep}), None) == swapped  # seeded by step


def test_cosine_decay_of_the_update_fraction():
    got = update_fractions(0, 300, 100, 0.3, "cosine")
    assert got == pytest.approx({t: 0.15 * (1 + math.cos(math.pi * t / 300))
                                 for t in (100, 200)})  # 300: decayed to 0, no update


@pytest.mark.parametrize("opt", [{"optimizer": "adam", "lr": 1e-2},
                                 {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}],
                         ids=["adam", "sgd"])
def test_rigl_in_training_regrows_from_zero_with_fresh_state(digits, small_mlp, opt):
    names = prunable_names(small_mlp)
    mask = pruned(small_mlp, 0.7)
    updates = Recorded(DropAndGrow({20: 0.3, 40: 0.2}, [(n,) for n in names], "gradient",
                                   seed=0, level=1))
    saves = Saves(stop_after=20)
    span = Span(0, 60, 30, 10, 20)
    with pytest.raises(KeyboardInterrupt):
        train_level(small_mlp, digits, TrainConfig(batch_size=32, **opt), mask, span, seed=0,
                    level=1, checkpoints=saves, mask_updates=updates)
    (step, weights, before, grads, new), = updates.seen
    (tensors, meta), = saves.all
    moments = [k.split(".")[1] for k, t in tensors.items() if k.startswith("optim.")
               and k.endswith(names[0]) and t.dim() > 0]  # not Adam's step counter
    assert moments
    for n in names:
        alive = int(before[n].sum())
        d = round_half_up(0.3 * alive)
        order = weights[n][before[n]].abs().sort().values
        dropped = before[n] & ~new[n]
        grown = new[n] & ~before[n]
        assert int(dropped.sum()) == int(grown.sum()) == d
        assert new.kept()[n] == alive  # the layer's count is exact
        assert weights[n][dropped].abs().max() <= order[d - 1]
        candidates = grads[n].abs()[~before[n]].sort(descending=True).values
        assert grads[n].abs()[grown].min() >= candidates[d - 1]
        # right after the update: regrown (and dropped) weights 0, their moments 0
        assert not tensors[f"model.{n}"][grown | dropped].any()
        for key in moments:
            assert not tensors[f"optim.{key}.{n}"][grown | dropped].any()


def test_a_rigl_run_on_nm_groups_keeps_n_in_every_group():
    torch.manual_seed(0)
    w, gr = torch.randn(6, 8), torch.randn(6, 8)
    ids = torch.arange(12).repeat_interleave(4).view(6, 8)  # 2 groups of 4 per row
    keep = torch.zeros(12, 4, dtype=torch.bool)
    keep[:, :2] = True  # 2:4
    keep = keep.view(6, 8)
    for regrow in ("gradient", "random"):
        up = DropAndGrow({10: 0.5}, [("w",)], regrow, seed=3, level=1, group_ids={"w": ids})
        new = up.update(10, {"w": w}, Mask({"w": keep}), {"w": gr})
        per_group = new["w"].view(12, 4).sum(1)
        assert per_group.tolist() == [2] * 12
        # round(0.5 * 24) = 12 dropped, as many regrown, in the groups that lost them
        assert int((new["w"] & ~keep).sum()) == int((keep & ~new["w"]).sum()) == 12


def test_a_rigl_run_records_updates_turnover_and_flops(digits, tmp_path):
    exp, result = run_method(digits, tmp_path, "rigl", prune={"criterion": "random"})
    table = result.table().set_index("level")
    start = Mask(RunDir(result.path).level(1).tensors("mask_start"))
    final = result.mask(1)
    assert final.kept() == start.kept()  # exact per layer at every update, so at the end
    assert table.loc[1, "mask_updates"] == 6
    new = sum(int((final[n] & ~start[n]).sum()) for n in final)
    assert table.loc[1, "mask_turnover"] == pytest.approx(new / sum(final.kept().values()))
    assert 0 < table.loc[1, "mask_turnover"] < 1
    # a random start costs no training: the budget is the level's own
    assert table.loc[1, "steps_to_mask"] == table.loc[1, "budget_steps"] == 90
    # FLOPs: 20% of the hidden weights, the dense gradient at the 6 updates
    plan = exp.check()
    f_s, f_d = plan.costs.forward(final.kept()), plan.costs.dense()
    expected = 2 * 32 * (3 * f_s * 90 + 6 * (f_d - f_s))
    assert table.loc[1, "train_flops"] == expected
    assert table.loc[0, "train_flops"] == 2 * 32 * 3 * f_d * 90


def test_a_rigl_mask_is_tested_as_a_ticket(digits, tmp_path):
    """The controls of any method's masks: retrain the RigL mask from θ0, fixed."""
    exp, rigl = run_method(digits, tmp_path, "rigl", prune={"criterion": "random"})
    control = lth.LotteryModel(exp.model, digits, train=exp.train, levels=1,
                               masks_from=rigl, reinit={"mode": "random"}).run(store=tmp_path)
    assert control.mask(1) == rigl.mask(1)
    assert control.table().set_index("level").loc[1, "mask_updates"] == 0


@pytest.mark.parametrize("method", ["gmp", "rigl"])
def test_a_crash_after_the_last_mask_is_written_resumes_identically(digits, tmp_path, method):
    _, straight = run_method(digits, tmp_path / "a", method)
    _, crashed = run_method(digits, tmp_path / "b", method)
    for name in ("final.safetensors", "history.json", "summary.json"):
        (crashed.path / "level_001" / name).unlink()  # mask.safetensors is the last mask
    _, resumed = run_method(digits, tmp_path / "b", method)
    assert resumed.mask(1) == straight.mask(1)
    assert states_equal(resumed.weights(1), straight.weights(1))


class Stop(Exception):
    pass


@pytest.mark.parametrize("method", ["gmp", "rigl"])
def test_interrupted_mid_level_after_updates_resumes_bit_identically(digits, tmp_path,
                                                                     method):
    _, straight = run_method(digits, tmp_path / "a", method)
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(32, 16))
    exp = lth.LotteryModel(model, digits, train={**FAST_TRAIN, "duration": "90it",
                                                 "eval_every": "30it",
                                                 "checkpoint_every": "20it"},
                           levels=1, prune={"rate": 0.8},
                           mask_updates={"method": method, "every": "10it"})

    def bomb(level, step, end):
        if level == 1 and step == 60:
            raise Stop

    with pytest.raises(Stop):
        exp.run(store=tmp_path / "b", progress=bomb)
    run = next((tmp_path / "b").iterdir())
    assert (run / "level_001" / "checkpoint.safetensors").exists()
    resumed = exp.run(store=tmp_path / "b")
    assert resumed.mask(1) == straight.mask(1)
    assert states_equal(resumed.weights(1), straight.weights(1))
    cols = [c for c in straight.table().columns if c != "wall_time_s"]
    assert straight.table()[cols].equals(resumed.table()[cols])
    assert straight.history().equals(resumed.history())


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize(("settings", "message"), [
    ({"mask_updates": {"method": "rigel"}}, "did you mean 'rigl'"),
    ({"mask_updates": {"fraction": 0.5}}, "only used with method"),
    ({"mask_updates": {"method": "gmp", "decay": "constant"}}, "only used with method = 'set'"),
    ({"mask_updates": {"method": "rigl", "fraction": 0}}, "in \\(0, 1\\]"),
    ({"mask_updates": {"method": "set", "begin": 0.8, "end": 0.5}}, "begin < end"),
    ({"mask_updates": {"method": "rigl"}, "earlybird": {"enabled": True}}, "early-bird"),
    ({"mask_updates": {"method": "gmp"}, "prune": {"supermask": "edge_popup"}},
     "learned supermask"),
    ({"mask_updates": {"method": "gmp"}, "prune": {"criterion": "snip"}}, "single weights"),
    ({"mask_updates": {"method": "set"}, "prune": {"structure": "unit"}},
     "cannot change weight by weight"),
    ({"mask_updates": {"method": "rigl"}, "prune": {"scope": "global"}}, "scope = 'layer'"),
    ({"mask_updates": {"method": "rigl", "every": "00it"}}, "must be longer than 0"),
])
def test_settings_that_cannot_work_are_refused_by_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict(settings)


def test_a_window_without_updates_is_refused_when_planning(digits, small_mlp):
    exp = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=1,
                           mask_updates={"method": "rigl", "every": "100it"})
    with pytest.raises(ConfigError, match="no update fits .* every 100 steps"):
        exp.check()


def test_default_mask_updates_leave_identities_unchanged(digits, small_mlp):
    plain = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN)
    same = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN,
                            mask_updates=MaskUpdatesConfig())
    other = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN,
                             mask_updates={"method": "set", "every": "10it"})
    assert "mask_updates" not in plain.spec()["settings"]
    assert plain.spec() == same.spec() != other.spec()


def test_an_at_init_criterion_costs_no_training(digits, small_mlp, tmp_path):
    result = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=2,
                              prune={"criterion": "snip", "schedule": "one_shot"}
                              ).run(store=tmp_path)
    table = result.table().set_index("level")
    assert list(table["steps_to_mask"]) == [0, 0, 0]
    assert list(table["budget_steps"]) == [60, 60, 60]
    imp = lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, levels=2).run(store=tmp_path)
    assert list(imp.table()["budget_steps"]) == [60, 120, 180]


def test_flops_of_a_conv_net_count_every_output_position():
    from lth.flops import costs_of

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3,
                          stride=2), nn.Flatten(), nn.Linear(4 * 3 * 3, 10))
    costs = costs_of(model, ["0.weight", "4.weight"], torch.zeros(2, 3, 8, 8))
    assert costs.uses == {"0.weight": 64, "4.weight": 1}
    assert costs.unmasked == 8 * 9 * 4 * 9  # the unmasked conv: 3x3 outputs, dense
    assert costs.dense() == 64 * 8 * 27 + 8 * 9 * 4 * 9 + 36 * 10
    assert costs.forward({"0.weight": 100, "4.weight": 36}) == 6400 + 8 * 9 * 4 * 9 + 36
    assert costs_of(nn.Sequential(nn.Embedding(4, 3)), ["0.weight"],
                    torch.zeros(2, 1, dtype=torch.long)) is None


# -- kill -9 and the presets (slow: subprocesses) ---------------------------------------------
KILLED = """
name = "k"
n_levels = 1
[model]
name = "mlp"
hidden = [64]
[train]
duration = "600it"
eval_every = "50it"
checkpoint_every = "25it"
batch_size = 32
[prune]
rate = 0.8
criterion = "{criterion}"
[mask_updates]
method = "{method}"
every = "20it"
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gmp", "rigl"])
def test_kill_9_mid_level_after_updates_resumes_bit_identically(tmp_path, method):
    import signal
    import subprocess
    import sys

    from .test_kill import wait_for

    cfg = tmp_path / "k.toml"
    cfg.write_text(KILLED.format(method=method,
                                 criterion="random" if method == "rigl" else "large_final"))
    cmd = [sys.executable, "-m", "lth", "run", str(cfg), "--quiet", "--store"]
    subprocess.run([*cmd, str(tmp_path / "a")], check=True, capture_output=True)
    proc = subprocess.Popen([*cmd, str(tmp_path / "b")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def updated_checkpoint():
            for path in (tmp_path / "b").glob("*/level_001/checkpoint.safetensors"):
                saved = RunDir(path.parent.parent).level(1).checkpoint().load()
                if saved and saved[1].get("mask_updates", {}).get("count", 0) >= 3:
                    return True
            return False

        wait_for(updated_checkpoint)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    run = next((tmp_path / "b").iterdir())
    assert not (run / "level_001" / "summary.json").exists()  # killed mid-level
    subprocess.run([*cmd, str(tmp_path / "b")], check=True, capture_output=True)
    straight = next((tmp_path / "a").iterdir())
    for name in ("mask", "mask_start", "start", "final"):
        a = RunDir(straight).level(1).tensors(name)
        b = RunDir(run).level(1).tensors(name)
        assert states_equal(a, b), name
    assert RunDir(straight).level(1).history() == RunDir(run).level(1).history()


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["gmp_digits", "set_digits", "rigl_digits", "nm24_digits"])
def test_the_digits_presets_run_as_written(tmp_path, preset):
    from lth.cli import main

    root = Path(__file__).resolve().parents[1] / "configs"
    assert main(["run", str(root / f"{preset}.toml"), "--store", str(tmp_path), "--quiet"]) == 0
    (run,) = tmp_path.iterdir()
    row = lth.load(run).levels.set_index("level").loc[1]
    assert row.pct_remaining < (60 if preset == "nm24_digits" else 15)
    assert row.final_test_acc > 0.85
    assert (row.mask_updates > 0) == (preset != "nm24_digits")


def test_rigl_on_nm_masks_keeps_every_group_at_n_through_training(digits, tmp_path):
    exp, result = run_method(digits, tmp_path, "rigl", prune={
        "structure": "nm", "nm": [2, 4], "schedule": "one_shot", "rate": 0.5,
        "output_rate": 0.0})
    layout = exp.check().layout
    start = Mask(RunDir(result.path).level(1).tensors("mask_start"))
    final = result.mask(1)
    assert final != start
    for name, keep in final.items():
        ids = layout.group_ids(name)
        if ids is None:
            assert bool(keep.all())  # the output layer stays dense
            continue
        per_group = torch.zeros(int(ids.max()) + 1, dtype=torch.long).index_add_(
            0, ids.flatten(), keep.flatten().long())
        assert per_group.eq(2).all(), name


def test_budgets_count_where_the_start_came_from(digits, small_mlp, tmp_path):
    """finetune starts from the source's trained network, a late rewind from θk (k steps
    of level 0); a control's mask costs what it cost in the run it comes from."""
    def run(**kw):
        return lth.LotteryModel(small_mlp, digits, train=FAST_TRAIN, **kw).run(
            store=tmp_path).table().set_index("level")

    tuned = run(levels=2, prune={"criterion": "large_init"}, reinit={"mode": "finetune"})
    # Level 1's mask scores θ0; level 2's scores level 1's start: level 0's trained network.
    assert list(tuned["steps_to_mask"]) == [0, 0, 60]
    assert list(tuned["budget_steps"]) == [60, 120, 180]  # each start was trained
    late = run(levels=1, prune={"criterion": "random"}, reinit={"rewind_step": "20it"})
    assert late.loc[1, "steps_to_mask"] == 20  # scored at θ20
    assert late.loc[1, "budget_steps"] == 20 + 40  # θ20, then trained from step 20 to 60
    assert late.loc[1, "budget_flops"] == round(late.loc[0, "train_flops"] * 20 / 60
                                                + late.loc[1, "train_flops"])
    exp, rigl = run_method(digits, tmp_path, "rigl", prune={"criterion": "random"})
    source = rigl.table().set_index("level")
    control = lth.LotteryModel(exp.model, digits, train=exp.train, levels=1, masks_from=rigl,
                               ).run(store=tmp_path).table().set_index("level")
    assert control.loc[1, "steps_to_mask"] == source.loc[1, "steps_to_mask"] == 90
    assert control.loc[1, "budget_steps"] == 90 + 90
    assert control.loc[1, "budget_flops"] == (source.loc[1, "flops_to_mask"]
                                              + control.loc[1, "train_flops"])


def test_a_control_holds_its_mask_fixed_whatever_the_base_updates(digits, tmp_path):
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(32, 16))
    session = lth.LotterySession(
        model, digits, train={**FAST_TRAIN, "duration": "90it"}, levels=1,
        prune={"rate": 0.8, "criterion": "random"},
        mask_updates={"method": "rigl", "every": "10it"},
        variants={"rigl": {}, "ticket": {"control": "same_mask", "of": "rigl"},
                  "reinit": {"control": "random_reinit", "of": "rigl"}})
    result = session.run(store=tmp_path)
    table = result.table().set_index(["experiment", "level"])
    assert table.loc[("rigl", 1), "mask_updates"] > 0
    assert table.loc[("ticket", 1), "mask_updates"] == table.loc[("reinit", 1),
                                                                 "mask_updates"] == 0
    masks = {run.name.rsplit("-", 1)[0]: lth.Result(run).mask(1)
             for run in (result.path / "trials").iterdir()}
    assert masks["ticket"] == masks["rigl"] == masks["reinit"]
