from __future__ import annotations

import pytest
import torch

import lth
from lth.earlybird import Search, distance_matrix, mask_distance
from lth.masks import Mask


def mask(bits: str) -> Mask:
    return Mask({"a": torch.tensor([c == "1" for c in bits[:6]]),
                 "b": torch.tensor([c == "1" for c in bits[6:]])})


def test_distance_on_known_masks():
    assert mask_distance(mask("1111110000"), mask("1111110000")) == 0.0
    assert mask_distance(mask("1111110000"), mask("0000001111")) == 1.0
    assert mask_distance(mask("1111110000"), mask("1111110001")) == pytest.approx(0.1)
    assert mask_distance(mask("1100000000"), mask("0000000011")) == pytest.approx(0.4)
    with pytest.raises(lth.ConfigError, match="different parameters"):
        mask_distance(mask("1111110000"), Mask({"a": torch.ones(6, dtype=torch.bool)}))


def test_queue_fires_exactly_when_the_rule_says():
    # Distances to the newest: masks differing in k of 10 entries are k/10 apart.
    seq = ["1111100000", "0111110000", "0011111000", "0011111000", "0011111100",
           "0011111000", "0011111000", "0011111000"]
    bird = Search(lambda m: None, every=1, queue=5, epsilon=0.1)
    fired = [bird.update(mask(s), step) for step, s in enumerate(seq, 1)]
    # check 4: newest vs [0..3] is 0.5 from the first mask -> no. check 5: newest vs
    # [1..4] = [0.2, 0, 0, 0.1] -> no. check 6: vs [2..5] = [0, 0, 0.1, 0] -> drawn.
    assert bird.drawn_step == 7 and fired == [False] * 6 + [True] * 2
    assert bird.matrix[5] == pytest.approx([0.4, 0.2, 0.0, 0.0, 0.1])
    never = Search(lambda m: None, every=1, queue=3, epsilon=0.0)
    assert not any(never.update(mask(s), i) for i, s in
                   enumerate(["1000000000", "0100000000"] * 3))
    with pytest.raises(lth.ConfigError, match="at least 2"):
        Search(lambda m: None, every=1, queue=1, epsilon=0.1)


def test_old_masks_dropped_beyond_the_budget_but_never_the_queue():
    seq = ["1111100000", "0111110000", "0011111000", "0011111000", "0011111100",
           "0011111000", "0011111000", "0011111000"]
    full = Search(lambda m: None, every=1, queue=3, epsilon=0.0)
    tight = Search(lambda m: None, every=1, queue=3, epsilon=0.0, keep_bytes=1)
    for step, s in enumerate(seq, 1):
        assert full.update(mask(s), step) == tight.update(mask(s), step)
    assert len(tight.packed) == 2 and sorted(tight.packed) == [6, 7]
    for row_full, row_tight in zip(full.matrix, tight.matrix, strict=True):
        assert row_tight[-2:] == row_full[-2:]  # the queue's distances are always known
    assert tight.matrix[-1][:5] == [None] * 5
    assert tight.record()["distance_matrix"][0][7] is None


def test_distance_matrix_is_symmetric_with_zero_diagonal():
    m = distance_matrix([mask("1111100000"), mask("0111110000"), mask("0000011111")])
    assert torch.equal(m, m.T) and torch.equal(m.diag(), torch.zeros(3))
    assert m[0, 2].item() == pytest.approx(1.0) and m[0, 1].item() == pytest.approx(0.2)
