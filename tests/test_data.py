from __future__ import annotations

import numpy as np
import pytest
import torch

import lth
from lth.data import split_validation


def test_digits_splits_and_identity(digits):
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    n = len(digits.y_train) + len(digits.y_val) + len(digits.y_test)
    assert n == 1797 and len(digits.y_test) == 360
    assert abs(float(digits.x_train.mean())) < 0.1
    assert lth.load_digits().identity() == digits.identity()
    assert lth.load_digits(split_seed=1).identity() != digits.identity()


def test_validation_split_is_seeded_and_disjoint():
    x = torch.arange(100.0).unsqueeze(1)
    y = torch.arange(100) % 3
    xt, yt, xv, yv = split_validation(x, y, 0.2, seed=4)
    assert len(xv) == 20 and len(xt) == 80
    assert set(xt[:, 0].tolist()).isdisjoint(xv[:, 0].tolist())
    again = split_validation(x, y, 0.2, seed=4)
    assert torch.equal(again[2], xv)
    assert len(split_validation(x, y, 7, seed=0)[2]) == 7


def test_from_arrays_accepts_numpy_and_explicit_validation():
    rng = np.random.default_rng(0)
    d = lth.from_arrays(rng.normal(size=(50, 4)), rng.integers(0, 3, 50),
                        rng.normal(size=(10, 4)), rng.integers(0, 3, 10),
                        x_val=rng.normal(size=(5, 4)), y_val=[0, 1, 2, 0, 1], num_classes=3)
    assert len(d.y_train) == 50 and len(d.y_val) == 5 and d.x_train.dtype == torch.float32


@pytest.mark.parametrize("kwargs, match", [
    ({"y_train": np.zeros(7)}, "x_train has 8 examples but y_train has 7"),
    ({"y_train": np.full(8, 5)}, "labels range over"),
    ({"x_train": np.full((8, 2), np.nan)}, "NaN"),
    ({"y_train": np.eye(8)}, r"y_train float32 \(7, 8\).*y_test int64 \(3,\).*pass class "
                             "indices"),
    ({"x_test": np.zeros((3, 5))}, "must match"),
    ({"val_size": 8}, "leaves no training data"),
])
def test_from_arrays_errors(kwargs, match):
    args = {"x_train": np.zeros((8, 2)), "y_train": np.arange(8) % 2,
            "x_test": np.zeros((3, 2)), "y_test": [0, 1, 0], "num_classes": 2, **kwargs}
    with pytest.raises(lth.DataError, match=match):
        lth.from_arrays(**args)


def test_user_arrays_run_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 6)) * 3
    y = rng.integers(0, 3, 300)
    x = centers[y] + rng.normal(size=(300, 6))
    data = lth.from_arrays(x[:240], y[:240], x[240:], y[240:], name="blobs")
    model = lth.create_model("mlp", input_shape=data.input_shape, num_classes=3, hidden=[16])
    result = lth.LotteryModel(model, data, train={"duration": "5ep", "batch_size": 20},
                              levels=1).run(store=tmp_path)
    assert result.table()["final_test_acc"].iloc[0] > 0.8


def test_unknown_dataset_and_model_names():
    with pytest.raises(lth.ConfigError, match="did you mean 'digits'"):
        lth.load_dataset("digit")
    with pytest.raises(lth.ConfigError, match="Known: .*lenet_300_100"):
        lth.create_model("resnet", input_shape=(3,), num_classes=2)
