from __future__ import annotations

import pytest
import torch
from torch import nn

import lth
from lth.store import load_tensors

from .conftest import FAST_TRAIN, states_equal


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class AnyNet(nn.Module):
    """Conv2d, BatchNorm, a residual block, Dropout, Conv1d, Flatten and a tied weight."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = Residual(8)
        self.drop = nn.Dropout(0.2)
        self.seq = nn.Conv1d(8, 4, 3, padding=1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4 * 64, 32)
        self.tied_a = nn.Linear(32, 32)
        self.tied_b = nn.Linear(32, 32)
        self.tied_b.weight = self.tied_a.weight
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.drop(self.block(self.stem(x)))
        x = torch.relu(self.seq(x.flatten(2)))
        x = torch.relu(self.fc(self.flat(x)))
        x = torch.relu(self.tied_b(torch.relu(self.tied_a(x))))
        return self.head(x)


def run(model, data, tmp_path, **kw):
    kw.setdefault("train", FAST_TRAIN)
    kw.setdefault("levels", 2)
    return lth.LotteryModel(model, data, **kw).run(store=tmp_path)


def test_any_module(digits, tmp_path):
    result = run(AnyNet(), digits, tmp_path, prune={"rate": 0.5, "output_rate": 0.2})
    cfg = result.config()
    assert list(cfg["prunable"]) == ["stem.0.weight", "block.conv1.weight",
                                     "block.conv2.weight", "seq.weight", "fc.weight",
                                     "tied_a.weight", "head.weight"]
    assert cfg["output_layer"] == ["head.weight"]
    table = result.table()
    assert table["level"].tolist() == [0, 1, 2]
    theta0 = load_tensors(result.path / "theta0.safetensors")[0]
    for level in (1, 2):
        mask, start = result.mask(level), result.weights(level, "start")
        final = result.weights(level, "final")
        for name, keep in mask.items():
            assert bool((final[name][~keep] == 0).all()), "pruned weights are 0 on disk"
            assert torch.equal(start[name][keep], theta0[name][keep]), "survivors rewound"
        for name in theta0.keys() - set(mask):  # biases, BN affine and running stats
            assert torch.equal(start[name], theta0[name]), name
        assert mask.is_subset_of(result.mask(level - 1))
    assert result.mask(2).densities()["head.weight"] == pytest.approx(0.64, abs=0.01)
    assert result.mask(2).densities()["fc.weight"] == pytest.approx(0.25, abs=0.01)


def test_same_seed_same_result_other_seed_differs(digits, small_mlp, tmp_path):
    a = run(small_mlp, digits, tmp_path / "a")
    b = run(small_mlp, digits, tmp_path / "b")
    c = run(small_mlp, digits, tmp_path / "c", seed=1)
    cols = ["best_test_acc", "final_test_acc", "early_stop_step", "weights_remaining"]
    assert a.table()[cols].equals(b.table()[cols])
    assert states_equal(a.weights(2), b.weights(2))
    assert a.path.name == b.path.name and a.path.name != c.path.name
    assert not states_equal(a.weights(0, "start"), c.weights(0, "start"))


def test_user_model_is_not_modified(digits, small_mlp, tmp_path):
    before = {k: v.clone() for k, v in small_mlp.state_dict().items()}
    run(small_mlp, digits, tmp_path, levels=1)
    assert states_equal(before, small_mlp.state_dict())


def test_keep_initializer_uses_the_given_weights(digits, small_mlp, tmp_path):
    result = run(small_mlp, digits, tmp_path, levels=0, initializer="keep")
    assert states_equal(result.weights(0, "start"),
                        {k: v for k, v in small_mlp.state_dict().items()})


def test_late_rewinding_restores_the_step_k_weights(digits, small_mlp, tmp_path):
    result = run(small_mlp, digits, tmp_path, reinit={"rewind_step": "20it"})
    rewind = load_tensors(result.path / "rewind.safetensors")[0]
    theta0 = result.weights(0, "start")
    assert not states_equal(rewind, theta0)
    start, mask = result.weights(1, "start"), result.mask(1)
    for name, keep in mask.items():
        assert torch.equal(start[name][keep], rewind[name][keep])
    hist = result.history(1)
    assert hist["step"].min() == 20 and hist["step"].max() == 60
    assert result.table()["train_steps"].tolist() == [60, 40, 40]


def test_one_shot_prunes_each_level_from_the_dense_net(digits, small_mlp, tmp_path):
    result = run(small_mlp, digits, tmp_path, prune={"schedule": "one_shot", "rate": 0.5})
    assert result.table()["pct_remaining"].round(0).tolist() == [100.0, 50.0, 25.0]


def test_global_scope_in_a_real_run(digits, small_mlp, tmp_path):
    result = run(small_mlp, digits, tmp_path,
                 prune={"scope": "global", "rate": 0.3, "criterion": "magnitude_increase"})
    kept = result.mask(2).kept()
    assert sum(kept.values()) == round((64 * 32 + 32 * 16 + 16 * 10) * 0.49)


def test_config_checked_against_data_before_training(digits, small_mlp, tmp_path):
    with pytest.raises(lth.ConfigError, match="rewind_step"):
        run(small_mlp, digits, tmp_path, reinit={"rewind_step": "1000it"})
    with pytest.raises(lth.ConfigError, match="batch_size"):
        run(small_mlp, digits, tmp_path, train={"batch_size": 5000})
    with pytest.raises(lth.ConfigError, match="warmup"):
        run(small_mlp, digits, tmp_path, train={**FAST_TRAIN, "warmup": "50ep"})
    with pytest.raises(lth.ConfigError, match="CUDA is not available"):
        if torch.cuda.is_available():
            pytest.skip("CUDA present")
        run(small_mlp, digits, tmp_path, train={**FAST_TRAIN, "device": "cuda"})
    assert not list(tmp_path.glob("*/level_000/summary.json"))


def test_models_that_cannot_work_get_a_clear_error(digits, tmp_path):
    with pytest.raises(lth.ModelError, match="shape"):
        run(nn.Sequential(nn.Linear(3, 10)), digits, tmp_path)
    with pytest.raises(lth.ModelError, match="expected"):
        run(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), digits, tmp_path)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_result(digits, tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.2), nn.ReLU(),
                          nn.Linear(32, 10))
    train = {**FAST_TRAIN, "duration": "90it", "eval_every": "10it",
             "checkpoint_every": "20it"}
    straight = run(model, digits, tmp_path / "a", train=train)

    def bomb(level, step, end):
        if level == 1 and step == 70:
            raise Interrupt

    exp = lth.LotteryModel(model, digits, train=train, levels=2)
    with pytest.raises(Interrupt):
        exp.run(store=tmp_path / "b", progress=bomb)
    run_dir = next((tmp_path / "b").iterdir())
    assert (run_dir / "level_001" / "checkpoint.safetensors").exists()
    assert not (run_dir / "level_001" / "summary.json").exists()
    resumed = run(model, digits, tmp_path / "b", train=train)
    for level in (0, 1, 2):
        assert states_equal(straight.weights(level), resumed.weights(level))
    cols = [c for c in straight.table().columns if c != "wall_time_s"]
    assert straight.table()[cols].equals(resumed.table()[cols])
    assert straight.history().equals(resumed.history())
    assert not (run_dir / "level_001" / "checkpoint.safetensors").exists()


def test_corrupt_file_of_an_unfinished_level_is_recomputed(digits, small_mlp, tmp_path):
    straight = run(small_mlp, digits, tmp_path / "a", levels=1)
    result = run(small_mlp, digits, tmp_path / "b", levels=1)
    (result.path / "level_001" / "summary.json").unlink()
    (result.path / "level_001" / "mask.safetensors").write_bytes(b"garbage")
    again = run(small_mlp, digits, tmp_path / "b", levels=1)
    assert states_equal(straight.weights(1), again.weights(1))
    assert straight.mask(1) == again.mask(1)


@pytest.mark.parametrize("mode", ["jitter", "reshuffle", "constant", "random"])
def test_resume_between_mask_and_start_files_is_identical(digits, small_mlp, tmp_path, mode):
    kw = {"reinit": {"mode": mode}, "levels": 2}
    straight = run(small_mlp, digits, tmp_path / "a", **kw)
    crashed = run(small_mlp, digits, tmp_path / "b", **kw)
    for name in ("start.safetensors", "final.safetensors", "history.json", "summary.json"):
        (crashed.path / "level_001" / name).unlink()  # as if killed after writing the mask
    for f in (crashed.path / "level_002").iterdir():
        f.unlink()
    resumed = run(small_mlp, digits, tmp_path / "b", **kw)
    for level in (1, 2):
        assert states_equal(straight.weights(level, "start"), resumed.weights(level, "start"))
        assert states_equal(straight.weights(level), resumed.weights(level))
    if mode == "random":  # a fresh draw: neither θ0 nor the trained weights
        mask, start = straight.mask(1), straight.weights(1, "start")
        for name, keep in mask.items():
            assert not torch.equal(start[name][keep], straight.weights(0, "start")[name][keep])
            assert not torch.equal(start[name][keep], straight.weights(0)[name][keep])


class CustomParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(64))  # no reset_parameters covers this
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1) * self.scale)


def test_random_reinit_refuses_parameters_no_initializer_draws(digits, tmp_path):
    with pytest.raises(lth.ConfigError, match="scale.*no initializer re-draws it"):
        run(CustomParam(), digits, tmp_path, prune={"include": ["scale"]},
            reinit={"mode": "random"})
    run(CustomParam(), digits, tmp_path, prune={"include": ["scale"]}, levels=1)  # rewind ok


def test_divergence_stops_with_a_clear_error(digits, small_mlp, tmp_path):
    with pytest.raises(lth.LTHError, match="diverged at level 0"):
        run(small_mlp, digits, tmp_path, train={**FAST_TRAIN, "optimizer": "sgd", "lr": 1e30})


def test_schedules_that_empty_a_layer_are_refused(digits, small_mlp, tmp_path):
    dead = "remove every weight of 1.weight, 3.weight, 5.weight by level 5"
    with pytest.raises(lth.ConfigError, match=dead):
        run(small_mlp, digits, tmp_path, prune={"schedule": "linear", "rate": 0.25},
            levels=5)
    with pytest.raises(lth.ConfigError, match="remove every weight"):
        run(small_mlp, digits, tmp_path, prune={"output_rate": 1.0})


def test_target_sparsity_is_reached_overall_with_other_rates(digits, small_mlp, tmp_path):
    result = run(small_mlp, digits, tmp_path, levels=3,
                 prune={"schedule": "target", "target_sparsity": 0.9, "output_rate": 0.1})
    assert result.table()["pct_remaining"].iloc[-1] == pytest.approx(10.0, abs=0.1)
    assert result.mask(3).densities()["5.weight"] == pytest.approx(0.729, abs=0.01)


def test_layer_rates_by_pattern(digits, small_mlp, tmp_path):
    result = run(small_mlp, digits, tmp_path, prune={"layer_rates": {"3.*": 0.5}})
    dens = result.mask(2).densities()
    assert dens["3.weight"] == pytest.approx(0.25, abs=0.01)
    assert dens["1.weight"] == pytest.approx(0.64, abs=0.01)
    with pytest.raises(lth.ConfigError, match="matches no prunable"):
        run(small_mlp, digits, tmp_path, prune={"layer_rates": {"fc1.*": 0.5}})
    with pytest.raises(lth.ModelError, match="exclude pattern"):
        run(small_mlp, digits, tmp_path, prune={"exclude": ["3.weigth"]})


def test_speed_settings_do_not_change_the_run(digits, small_mlp, tmp_path):
    a = run(small_mlp, digits, tmp_path, levels=1)
    b = run(small_mlp, digits, tmp_path, levels=1,
            train={**FAST_TRAIN, "threads": 2, "eval_batch_size": 7, "checkpoint_every": 5})
    assert a.path == b.path


def test_random_reinit_control_reuses_the_tickets_masks(digits, small_mlp, tmp_path):
    ticket = run(small_mlp, digits, tmp_path)
    control = run(small_mlp, digits, tmp_path, masks_from=ticket, reinit={"mode": "random"})
    assert control.path != ticket.path
    for level in (1, 2):
        assert control.mask(level) == ticket.mask(level)
        start, t_start = control.weights(level, "start"), ticket.weights(level, "start")
        keep = ticket.mask(level)["1.weight"]
        assert not torch.equal(start["1.weight"][keep], t_start["1.weight"][keep])
    assert states_equal(control.weights(0), ticket.weights(0))  # same dense level


def test_masks_from_must_fit(digits, small_mlp, tmp_path):
    ticket = run(small_mlp, digits, tmp_path, levels=1)
    with pytest.raises(lth.ConfigError, match="has 1 levels, this run asks for 2.*re-run the "
                                              "script that made"):
        run(small_mlp, digits, tmp_path, masks_from=ticket, levels=2)
    other = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(8,))
    with pytest.raises(lth.ConfigError, match="other prunable parameters"):
        run(other, digits, tmp_path, masks_from=ticket, levels=1)
    with pytest.raises(lth.ConfigError, match="not a run directory"):
        run(small_mlp, digits, tmp_path, masks_from=tmp_path / "nope", levels=1)


@pytest.mark.parametrize("mode", ["random_layer", "random_global"])
def test_random_pruning_control_keeps_the_tickets_counts(digits, small_mlp, tmp_path, mode):
    ticket = run(small_mlp, digits, tmp_path, prune={"scope": "global", "rate": 0.4})
    control = run(small_mlp, digits, tmp_path, masks_from=ticket, masks_from_mode=mode)
    for level in (1, 2):
        t, c = ticket.mask(level), control.mask(level)
        assert c != t and c.is_subset_of(control.mask(level - 1))
        if mode == "random_layer":
            assert c.kept() == t.kept()
        else:
            assert sum(c.kept().values()) == sum(t.kept().values())
            assert c.kept() != t.kept()
    start = control.weights(1, "start")  # rewound survivors: the random-pruning control
    for name, keep in control.mask(1).items():
        assert torch.equal(start[name][keep], control.weights(0, "start")[name][keep])


def test_retraining_variants_start_from_the_right_weights_and_lr(digits, small_mlp, tmp_path):
    train = {**FAST_TRAIN, "optimizer": "sgd", "momentum": 0.9, "lr": 0.05,
             "lr_schedule": "step", "milestones": ("30it",), "gamma": 0.1}
    runs = {mode: run(small_mlp, digits, tmp_path / mode, train=train, levels=1,
                      reinit={"mode": mode, "rewind_step": "10it"})
            for mode in ("rewind", "lr_rewind", "finetune")}
    dense_final = runs["rewind"].weights(0)
    for mode in ("lr_rewind", "finetune"):
        start, mask = runs[mode].weights(1, "start"), runs[mode].mask(1)
        assert states_equal(runs[mode].weights(0), dense_final)  # same dense level
        for name, t in start.items():
            expect = dense_final[name] * mask[name] if name in set(mask) else dense_final[name]
            assert torch.equal(t, expect), name  # the trained weights, pruned
    rewound = runs["rewind"].weights(1, "start")
    assert not torch.equal(rewound["1.weight"], runs["lr_rewind"].weights(1, "start")["1.weight"])
    lr = {mode: runs[mode].history(1).set_index("step").lr for mode in runs}
    assert lr["rewind"][10] == pytest.approx(0.05) and lr["lr_rewind"][10] == pytest.approx(0.05)
    assert lr["lr_rewind"][60] == pytest.approx(0.005)  # the schedule replays from step k
    assert lr["finetune"].tolist() == pytest.approx([0.005] * len(lr["finetune"]))
    assert runs["finetune"].table().train_steps.tolist() == [60, 50]  # the same budget


def test_keep_trained_modes_with_one_shot_restart_from_the_dense_net(digits, small_mlp,
                                                                     tmp_path):
    r = run(small_mlp, digits, tmp_path, prune={"schedule": "one_shot"},
            reinit={"mode": "lr_rewind"})
    for level in (1, 2):
        start, mask = r.weights(level, "start"), r.mask(level)
        for name, keep in mask.items():
            assert torch.equal(start[name], r.weights(0)[name] * keep)
