from __future__ import annotations

import pytest
import torch

import lth
from lth.earlybird import EarlyBird, distance_matrix, mask_distance
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
    bird = EarlyBird(queue=5, epsilon=0.1)
    fired = [bird.update(mask(s)) for s in seq]
    # check 4: newest vs [0..3] is 0.5 from the first mask -> no. check 5: newest vs
    # [1..4] = [0.2, 0, 0, 0.1] -> no. check 6: vs [2..5] = [0, 0, 0.1, 0] -> drawn.
    assert bird.drawn_at == 6 and fired == [False] * 6 + [True] * 2
    assert bird.distances[5] == pytest.approx([0.2, 0.0, 0.0, 0.1])
    never = EarlyBird(queue=3, epsilon=0.0)
    assert not any(never.update(mask(s)) for s in ["1000000000", "0100000000"] * 3)
    with pytest.raises(lth.ConfigError, match="at least 2"):
        EarlyBird(queue=1)


def test_distance_matrix_is_symmetric_with_zero_diagonal():
    m = distance_matrix([mask("1111100000"), mask("0111110000"), mask("0000011111")])
    assert torch.equal(m, m.T) and torch.equal(m.diag(), torch.zeros(3))
    assert m[0, 2].item() == pytest.approx(1.0) and m[0, 1].item() == pytest.approx(0.2)
