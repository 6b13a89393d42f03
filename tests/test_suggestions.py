"""Did-you-mean: names a typed name begins or is part of first, then close spellings."""

from __future__ import annotations

import pytest

import lth
from lth.errors import did_you_mean


def test_a_prefix_finds_the_model_it_begins():
    with pytest.raises(lth.ConfigError, match="unknown model 'lenet'; did you mean "
                                              "'lenet_300_100'\\?"):
        lth.create_model("lenet", input_shape=(1, 28, 28), num_classes=10)


def test_several_names_that_match_are_all_suggested():
    msg = did_you_mean("resnet", lth.MODELS)
    assert msg == "; did you mean 'resnet18', 'resnet20', 'resnet32' or 'resnet56'?"
    assert did_you_mean("vgg19b", lth.MODELS) == "; did you mean 'vgg19_bn'?"
    # a part of the name, case and separators aside
    assert did_you_mean("MNIST", ["mnist", "fashion_mnist", "digits"]) == (
        "; did you mean 'mnist' or 'fashion_mnist'?")
    assert did_you_mean("Fashion-MNIST", ["mnist", "fashion_mnist"]) == (
        "; did you mean 'fashion_mnist'?")


def test_without_a_prefix_or_part_the_closest_spelling_is_suggested():
    assert did_you_mean("resnt20", lth.MODELS) == "; did you mean 'resnet20'?"
    assert did_you_mean("large_fnal", lth.CRITERIA) == "; did you mean 'large_final'?"
    assert did_you_mean("zzz", lth.MODELS) == ""


def test_the_config_error_names_the_prefix_match(tmp_path, capsys):
    from lth.cli import main

    toml = tmp_path / "t.toml"
    toml.write_text('name = "t"\n[model]\nname = "lenet"\n')
    assert main(["run", str(toml), "--store", str(tmp_path / "s")]) == 2
    assert "did you mean 'lenet_300_100'" in capsys.readouterr().err
