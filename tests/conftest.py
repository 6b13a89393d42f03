from __future__ import annotations

import pytest
import torch

import lth


@pytest.fixture(scope="session")
def digits() -> lth.Data:
    return lth.load_digits()


@pytest.fixture
def small_mlp(digits):
    model = lth.create_model("mlp", input_shape=digits.input_shape, num_classes=10,
                             hidden=(32, 16))
    return lth.initialize(model, "default", seed=0)  # independent of test order


FAST_TRAIN = {"duration": "60it", "eval_every": "20it", "batch_size": 32}


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    # The library's default; on a shared 2-core box more threads only contend.
    torch.set_num_threads(1)
