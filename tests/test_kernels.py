"""The sparse Linear kernels against the dense products, for awkward patterns and
batch sizes (panel remainders, several panels, empty rows and columns, nnz = 0)."""

import numpy as np
import pytest

from lth.train import kernels


def _keep(kind, shape, rng):
    out, inn = shape
    if kind == "dense":
        return np.ones(shape, dtype=bool)
    if kind == "empty":
        return np.zeros(shape, dtype=bool)
    keep = rng.random(shape) < {"sparse": 0.05, "half": 0.5}.get(kind, 0.2)
    if kind == "ragged":  # empty rows, empty columns, a fully dense row and column
        keep[::3] = False
        keep[:, ::4] = False
        keep[out // 2] = True
        keep[:, inn // 2] = True
    return keep


def _check(keep, batch, rng, bias=True, input_grad=True):
    out, inn = keep.shape
    p = kernels.Pattern.of(keep)
    weight = (rng.standard_normal(keep.shape) * keep).astype(np.float32)
    values = weight[keep]
    b = rng.standard_normal(out).astype(np.float32) if bias else None
    xT = rng.standard_normal((inn, batch)).astype(np.float32)
    gyT = rng.standard_normal((out, batch)).astype(np.float32)
    yT = np.full((out, batch), np.nan, dtype=np.float32)  # overwritten, whatever it held
    kernels.forward(p, xT, values, b, yT)
    w64, x64, g64 = weight.astype(np.float64), xT.astype(np.float64), gyT.astype(np.float64)
    want = w64 @ x64 + (b[:, None] if bias else 0)
    scale = np.abs(w64) @ np.abs(x64) + 1
    np.testing.assert_array_less(np.abs(yT - want), 1e-5 * scale)

    gvalues = np.full(p.nnz, np.nan, dtype=np.float32)
    gxT = np.full((inn, batch), np.nan, dtype=np.float32) if input_grad else None
    kernels.backward(p, xT, values, gyT, gvalues, gxT)
    want_gw = (g64 @ x64.T)[keep]
    scale_gw = (np.abs(g64) @ np.abs(x64.T))[keep] + 1
    np.testing.assert_array_less(np.abs(gvalues - want_gw), 1e-5 * scale_gw)
    if input_grad:
        want_gx = w64.T @ g64
        scale_gx = np.abs(w64.T) @ np.abs(g64) + 1
        np.testing.assert_array_less(np.abs(gxT - want_gx), 1e-5 * scale_gx)


@pytest.mark.parametrize("batch", [1, 7, 16, 60, 64, 65, 130, 2048])
@pytest.mark.parametrize("kind", ["ragged", "dense", "empty", "sparse", "half"])
def test_kernels_match_the_dense_products(kind, batch):
    rng = np.random.default_rng(batch)
    _check(_keep(kind, (37, 53), rng), batch, rng)


@pytest.mark.parametrize("batch", [60, 100])
def test_without_bias_and_without_the_input_gradient(batch):
    rng = np.random.default_rng(1)
    _check(_keep("ragged", (30, 41), rng), batch, rng, bias=False, input_grad=False)


def test_lenet_shapes():
    rng = np.random.default_rng(2)
    for shape in [(300, 784), (100, 300), (10, 100)]:
        _check(_keep("random", shape, rng), 60, rng)


def test_a_zero_batch_and_a_one_by_one_matrix():
    rng = np.random.default_rng(3)
    _check(np.ones((1, 1), dtype=bool), 0, rng)
    _check(np.ones((1, 1), dtype=bool), 3, rng)
    _check(np.zeros((4, 0), dtype=bool), 5, rng)


def test_the_pattern_keeps_the_row_major_order_of_values():
    keep = np.array([[1, 0, 1], [0, 1, 1]], dtype=bool)
    p = kernels.Pattern.of(keep)
    assert p.crow.tolist() == [0, 2, 4] and p.col.tolist() == [0, 2, 1, 2]
    assert p.ccol.tolist() == [0, 1, 2, 4]
    assert p.row.tolist() == [0, 1, 0, 1] and p.perm.tolist() == [0, 2, 1, 3]
    assert p.nnz == 4 and p.shape == (2, 3)
