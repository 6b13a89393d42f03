"""Hostile configuration values (issue 14): each gets one ConfigError naming the key and
the fix before anything trains, never a traceback from torch, the TOML reader or Python."""

from __future__ import annotations

import math

import pytest

import lth
from lth.config import load_config, parse_override


@pytest.mark.parametrize("section, key, value", [
    ("train", "weight_decay", math.nan),
    ("train", "lr", math.inf),
    ("train", "weight_decay", math.inf),
    ("train", "momentum", -math.inf),
    ("reinit", "jitter_sd", math.nan),
    ("reinit", "constant", math.inf),
    ("prune", "rate", math.nan),
])
def test_non_finite_numbers_are_refused_by_key(section, key, value):
    with pytest.raises(lth.ConfigError, match=rf"{section}\.{key}: got {value!r}; expected a "
                                              "finite number"):
        lth.ExperimentConfig.from_dict({section: {key: value}})


@pytest.mark.parametrize("section, key, value, match", [
    ("train", "threads", 2**63 - 1, "from 1 to 1024"),
    ("train", "threads", 100000, "from 1 to 1024"),
    ("data", "split_seed", 2**64, "below 2\\^63"),
    ("train", "batch_size", 2**70, "below 2\\^63"),
    (None, "seed", 2**64, "below 2\\^63"),
])
def test_huge_integers_are_refused_by_key(section, key, value, match):
    settings = {key: value} if section is None else {section: {key: value}}
    name = key if section is None else f"{section}.{key}"
    with pytest.raises(lth.ConfigError, match=rf"{name}: .*{match}"):
        lth.ExperimentConfig.from_dict(settings)


def test_a_model_too_large_to_build_is_a_config_error(digits):
    with pytest.raises(lth.ConfigError, match=r"model 'mlp' could not be built.*hidden"):
        lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                         hidden=(2**40,))


@pytest.mark.parametrize("duration", [2**62, "100000000000it", "1000000000ep"])
def test_a_duration_that_cannot_finish_is_refused_with_its_step_count(digits, duration):
    exp = lth.LotteryModel(lth.create_model("mlp", input_shape=digits.input_shape,
                                            num_classes=10, hidden=(8,)),
                           digits, train={"duration": duration})
    with pytest.raises(lth.ConfigError, match=r"train.duration = .* steps per level.*at most "
                                              "1,000,000,000"):
        exp.check()


def test_config_files_that_are_not_text_toml_get_one_message(tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"name = \"\xff\xfe\"\n")
    with pytest.raises(lth.ConfigError, match="not UTF-8 text.*byte 8"):
        load_config(binary)
    with pytest.raises(lth.ConfigError, match="is a directory, not a config file"):
        load_config(tmp_path)
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(lth.ConfigError, match="nested too deeply"):
        load_config(deep)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbfname = \"with_bom\"\n")
    assert load_config(path).name == "with_bom"


@pytest.mark.parametrize("text, key, value", [
    ('prune.layer_rates."1.weight"=0.5', ("prune", "layer_rates", "1.weight"), 0.5),
    ("prune.layer_rates.'features.*'=0.3", ("prune", "layer_rates", "features.*"), 0.3),
    ("train.lr = 0.01", ("train", "lr"), 0.01),
    ('name="a=b"', ("name",), "a=b"),
])
def test_set_keys_follow_toml_quoting(text, key, value):
    assert parse_override(text) == (key, value)


def test_a_set_with_quoted_dotted_key_reaches_the_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nname = "mlp"\n')
    cfg = load_config(path, ['prune.layer_rates."1.weight"=0.5'])
    assert cfg.prune.layer_rates == {"1.weight": 0.5}


@pytest.mark.parametrize("text", ['prune..rate=0.1', '"unterminated=1', '=3', ' =3',
                                  '[a]\n[b]\nc=1', 'a\nb=1', 'train.lr # x=1'])
def test_malformed_set_keys_are_refused(text):
    with pytest.raises(lth.ConfigError, match="--set"):
        parse_override(text)
