"""Keras 3 models (torch backend), as the reference Keras LTH API's users bring them: a
Sequential and a Functional model with Flatten, Dropout and BatchNormalization."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest  # noqa: E402
import torch  # noqa: E402

import lth  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("keras was imported with another backend", allow_module_level=True)

# Keras's torch backend converts through numpy's old __array__ protocol: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
TRAIN = {"duration": "60it", "eval_every": "20it", "batch_size": 32,
         "checkpoint_every": "10it"}


def sequential(input_shape):
    return keras.Sequential([
        keras.Input(input_shape), keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu", name="fc1"), keras.layers.Dropout(0.2),
        keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(10, name="out")],
        name="seq")


def functional(input_shape):
    inputs = keras.Input(input_shape)
    h = keras.layers.Permute((2, 3, 1))(inputs)  # lth's images are channels-first
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dropout(0.2)(h)
    h = keras.layers.Dense(24, activation="relu", name="fc")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(h), name="func")


def rewound(result, level):
    theta0, mask, start = result.run.theta0(), result.mask(level), result.weights(level, "start")
    return all(torch.equal(start[n], theta0[n] * mask[n]) if n in mask.names()
               else torch.equal(start[n], theta0[n]) for n in theta0)


@pytest.mark.parametrize("build, kernels", [
    (sequential, ["fc1/kernel", "out/kernel"]),
    (functional, ["conv/kernel", "fc/kernel", "out/kernel"])])
def test_a_keras_model_runs_imp_keyed_by_keras_names(digits, tmp_path, build, kernels):
    model = build(digits.input_shape)
    exp = lth.LotteryModel(model, digits, levels=2, train=TRAIN,
                           prune={"rate": 0.2, "conv_rate": 0.1, "output_rate": 0.1})
    plan = exp.check()
    assert plan.names == kernels and plan.output == ["out/kernel"]
    assert plan.rates == {n: 0.1 if n in ("conv/kernel", "out/kernel") else 0.2 for n in kernels}
    result = exp.run(store=tmp_path)
    sizes = result.config()["prunable"]
    for level in (1, 2):
        kept = result.mask(level).kept()
        assert all(abs(kept[n] - sizes[n] * (1 - plan.rates[n]) ** level) < 1 for n in kernels)
        assert rewound(result, level)
    assert "bn/moving_mean" in result.weights(2)  # BatchNormalization statistics are kept
    other_seed = lth.LotteryModel(model, digits, seed=1).check().theta0
    assert not torch.equal(other_seed[kernels[0]], plan.theta0[kernels[0]])
    assert torch.equal(plan.theta0["out/bias"], torch.zeros(10))  # Keras's own zeros


def test_dropout_and_batchnorm_train_in_training_mode(digits):
    module = lth.LotteryModel(sequential(digits.input_shape), digits).model
    x = digits.prepare(digits.x_train[:8])
    module.train()
    assert not torch.equal(module(x), module(x))  # dropout draws
    module.eval()
    assert torch.equal(module(x), module(x))


def test_a_keras_run_resumes_bit_identically_and_redraws_randomly(digits, tmp_path):
    model = sequential(digits.input_shape)
    make = lambda: lth.LotteryModel(model, digits, levels=1, train=TRAIN,  # noqa: E731
                                    reinit={"mode": "random"})
    straight = make().run(store=tmp_path / "a")

    def stop(level, step, end):
        if level == 1 and step >= 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make().run(store=tmp_path / "b", progress=stop)
    assert any((tmp_path / "b").rglob("level_001/checkpoint.safetensors"))
    resumed = make().run(store=tmp_path / "b")
    assert resumed.path.name == straight.path.name  # θ0 (with Dropout's seed) is the seed's
    for level in (0, 1):
        a, b = straight.weights(level), resumed.weights(level)
        assert all(torch.equal(a[n], b[n]) for n in a)
    start, theta0 = straight.weights(1, "start"), straight.run.theta0()
    assert not torch.equal(start["fc1/kernel"], theta0["fc1/kernel"] * straight.mask(1)[
        "fc1/kernel"])  # a fresh draw from the layer's initializer, masked


def test_the_reference_apis_short_criterion_names_are_the_same_experiments(digits):
    from lth.pruning.criteria import CRITERION_ALIASES

    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10)
    for short, full in CRITERION_ALIASES.items():
        a = lth.LotteryModel(model, digits, prune={"criterion": short})
        assert a.prune.criterion == full
        assert a.recipe() == lth.LotteryModel(model, digits,
                                              prune={"criterion": full}).recipe()


def test_names_do_not_depend_on_how_many_models_the_process_built(digits, tmp_path):
    first = lth.LotteryModel(sequential(digits.input_shape), digits, levels=1, train=TRAIN)
    unnamed = keras.Sequential([keras.Input(digits.input_shape), keras.layers.Flatten(),
                                keras.layers.Dense(16), keras.layers.Dense(10)])
    again = keras.Sequential([keras.Input(digits.input_shape), keras.layers.Flatten(),
                              keras.layers.Dense(16), keras.layers.Dense(10)])
    names = [lth.LotteryModel(m, digits).check().names for m in (unnamed, again)]
    assert names[0] == names[1] == ["dense/kernel", "dense_1/kernel"]
    a = first.run(store=tmp_path)
    b = lth.LotteryModel(sequential(digits.input_shape), digits, levels=1, train=TRAIN).run(
        store=tmp_path)
    assert a.path == b.path  # a rebuilt model (a re-run notebook cell) resumes its run


def test_keras_models_draw_from_their_layers_initializers_only(digits):
    with pytest.raises(lth.ConfigError, match="own initializers.*kernel_initializer"):
        lth.LotteryModel(sequential(digits.input_shape), digits,
                         initializer="xavier_normal").check()
