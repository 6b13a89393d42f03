from __future__ import annotations

import pytest

import lth
from lth.config import ExperimentConfig, PruneConfig, TrainConfig, load_config, parse_override
from lth.durations import to_steps


def problems_of(data: dict) -> str:
    with pytest.raises(lth.ConfigError) as info:
        ExperimentConfig.from_dict(data)
    return str(info.value)


def test_defaults_are_valid():
    cfg = ExperimentConfig()
    assert cfg.train.optimizer == "adam" and cfg.prune.rate == 0.2


def test_unknown_key_suggests_the_close_one():
    msg = problems_of({"train": {"learning_rate": 0.1, "lr": 0.1}, "prune": {"rtae": 0.2}})
    assert "train.learning_rate" in msg and "prune.rtae" in msg
    assert "did you mean 'rate'" in msg


def test_all_problems_reported_in_one_message():
    msg = problems_of({"seed": -1, "train": {"lr": -1.0, "optimizer": "adamm"},
                       "prune": {"rate": 1.5, "criterion": "large_finl"},
                       "reinit": {"mode": "rewnd", "rewind_step": "-3it"}})
    for key in ("seed", "train.lr", "train.optimizer", "prune.rate", "prune.criterion",
                "reinit.mode", "reinit.rewind_step"):
        assert key in msg, key
    assert "did you mean 'adam'" in msg and "did you mean 'large_final'" in msg
    assert "1.5" in msg and "[0, 1]" in msg


def test_wrong_types_name_key_and_value():
    msg = problems_of({"n_levels": "five", "train": {"batch_size": 6.5, "nesterov": "yes"}})
    assert "n_levels" in msg and "'five'" in msg and "expected an integer" in msg
    assert "train.batch_size" in msg and "train.nesterov" in msg


@pytest.mark.parametrize("kwargs, key", [
    ({"duration": "10 epochs"}, "duration"), ({"duration": 0}, "duration"),
    ({"eval_every": "0it"}, "eval_every"), ({"momentum": 1.0}, "momentum"),
    ({"nesterov": True}, "nesterov"), ({"device": "gpu"}, "device"),
    ({"milestones": ("5it",)}, "milestones"), ({"gamma": 0.0}, "gamma"),
])
def test_train_value_checks(kwargs, key):
    with pytest.raises(lth.ConfigError, match=key):
        TrainConfig(**kwargs)


def test_target_schedule_needs_target():
    with pytest.raises(lth.ConfigError, match="target_sparsity"):
        PruneConfig(schedule="target")
    with pytest.raises(lth.ConfigError, match="target_sparsity"):
        PruneConfig(target_sparsity=0.5)
    assert PruneConfig(schedule="target", target_sparsity=0.9).target_sparsity == 0.9


def test_model_options_checked_against_builder():
    msg = problems_of({"model": {"name": "mlp", "hiden": [10]}})
    assert "model.hiden" in msg and "did you mean 'hidden'" in msg
    msg = problems_of({"model": {"name": "lenet300"}})
    assert "did you mean 'lenet_300_100'" in msg


def test_toml_roundtrip_and_overrides(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('name = "x"\n[train]\nlr = 0.01\nmilestones = ["5ep"]\n'
                    'lr_schedule = "step"\n')
    cfg = load_config(path, ["train.lr=0.5", "prune.criterion=movement", "seed=3"])
    assert cfg.train.lr == 0.5 and cfg.prune.criterion == "movement" and cfg.seed == 3
    assert cfg.train.milestones == ("5ep",)
    again = ExperimentConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_load_config_errors(tmp_path):
    with pytest.raises(lth.ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(lth.ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(lth.ConfigError, match="KEY=VALUE"):
        parse_override("train.lr")


def test_durations():
    assert to_steps("3ep", 50) == 150 and to_steps("70it", 50) == 70 and to_steps(9, 50) == 9
    with pytest.raises(ValueError):
        to_steps("3 weeks", 50)


def test_python_api_type_errors_are_config_errors():
    with pytest.raises(lth.ConfigError, match="lr: got 'x'; expected a number"):
        TrainConfig(lr="x")
    assert isinstance(TrainConfig(lr=1).lr, float)


@pytest.mark.parametrize("data, match", [
    ({"data": {"root": "/somewhere"}}, "data.root: dataset 'digits' is built in"),
    ({"data": {"val_size": -5}}, "data.val_size"),
    ({"data": {"val_size": 2.5}}, "data.val_size"),
])
def test_data_section_checks(data, match):
    assert match in problems_of(data)


def test_model_option_values_are_checked_when_built():
    with pytest.raises(lth.ConfigError, match="model.hidden = 'abc'"):
        lth.create_model("mlp", input_shape=(4,), num_classes=2, hidden="abc")
    with pytest.raises(lth.ConfigError, match="positive layer widths"):
        lth.create_model("mlp", input_shape=(4,), num_classes=2, hidden=[0])
