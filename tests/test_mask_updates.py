"""A mask that changes at given steps inside a level (lth.train.MaskUpdates): what the
trainer does with the mask it gets back (pruned weights exactly 0, the optimizer state of
changed positions reset, regrown weights from 0), the count of updates, the last mask, the
checkpoint (resume after an update is bit-identical) and stacking."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lth.config import TrainConfig
from lth.errors import ModelError
from lth.masks import Mask, prunable_names
from lth.train import Callback, MaskUpdates, Span, train_level, train_stack

from .conftest import states_equal
from .test_stack import ATOL, close, jobs, mlp, record_stack_sizes
from .test_train import OPTIMIZERS, pruned

SGD, ADAM = OPTIMIZERS[1], OPTIMIZERS[2]
MOMENTS = {"sgd": ["momentum_buffer"], "adam": ["exp_avg", "exp_avg_sq"]}


# -- toy mask updates -------------------------------------------------------------------------
class PruneHalf(MaskUpdates):
    """At step ``at``, prunes the smaller half (by magnitude, ties by position) of
    ``layer``'s surviving weights."""

    def __init__(self, layer: str, at: int = 20):
        self.layer, self.at, self.made = layer, at, []

    def due(self, step):
        return step == self.at

    def update(self, step, weights, mask, gradients):
        assert gradients is None  # not asked for
        keep = mask[self.layer].to(weights[self.layer].device)
        w = weights[self.layer].abs().masked_fill(~keep, float("inf")).flatten()
        drop = torch.argsort(w, stable=True)[:int(keep.sum()) // 2]
        new = mask.tensors()
        new[self.layer] = keep.flatten().index_fill(0, drop, False).view_as(keep)
        self.made.append((step, Mask(new)))
        return Mask(new)


class RandomSwap(MaskUpdates):
    """At each of ``steps``, in every layer, drops ``n`` random surviving weights and
    regrows ``n`` random pruned ones (SET with random drops): a generator to checkpoint."""

    def __init__(self, steps=(20, 60), n: int = 10, seed: int = 0):
        self.steps, self.n, self.made = set(steps), n, []
        self.g, self.calls = torch.Generator().manual_seed(seed), 0

    def due(self, step):
        return step in self.steps

    def update(self, step, weights, mask, gradients):
        new = {}
        for name, keep in mask.items():
            flat = keep.flatten().clone()
            alive, dead = flat.nonzero().flatten(), (~flat).nonzero().flatten()
            drop = alive[torch.randperm(len(alive), generator=self.g)[:self.n]]
            grow = dead[torch.randperm(len(dead), generator=self.g)[:self.n]]
            flat[drop], flat[grow] = False, True
            new[name] = flat.view_as(keep)
        self.calls += 1
        self.made.append((step, Mask(new)))
        return Mask(new)

    def state(self):
        return {"g": self.g.get_state()}, {"calls": self.calls}

    def load(self, tensors, meta):
        self.g.set_state(tensors["g"])
        self.calls = meta["calls"]


class GrowByGradient(MaskUpdates):
    """RigL's update on one layer at ``steps``: drops the ``n`` smallest surviving weights
    and regrows the ``n`` pruned positions where the dense gradient is largest."""

    gradients = True

    def __init__(self, layer: str, steps=(20,), n: int = 8):
        self.layer, self.steps, self.n, self.made, self.seen = layer, set(steps), n, [], None

    def due(self, step):
        return step in self.steps

    def update(self, step, weights, mask, gradients):
        self.seen = {k: g.clone() for k, g in gradients.items()}
        keep = mask[self.layer].flatten()
        w = weights[self.layer].abs().flatten().masked_fill(~keep, float("inf"))
        g = gradients[self.layer].abs().flatten().masked_fill(keep, -1.0)
        drop, grow = torch.argsort(w, stable=True)[:self.n], torch.argsort(-g, stable=True)[
            :self.n]
        new = mask.tensors()
        new[self.layer] = keep.index_fill(0, drop, False).index_fill(0, grow, True).view_as(
            mask[self.layer])
        self.made.append((step, Mask(new)))
        return Mask(new)


class Never(MaskUpdates):
    def due(self, step):
        return False

    def update(self, step, weights, mask, gradients):
        raise AssertionError("never due")


# -- observers --------------------------------------------------------------------------------
class Watch(Callback):
    """After every step: are the weights pruned by the mask of now exactly 0?"""

    def __init__(self, start: Mask, updates):
        self.start, self.updates, self.ok, self.grads = start, updates, [], []

    def after_backward(self, params, grads):
        self.grads.append({n: g.clone() for n, g in grads.items()})

    def after_step(self, step, state):
        mask = self.updates.made[-1][1] if self.updates.made else self.start
        weights = state()
        self.ok.append(all(bool((weights[n][~keep] == 0).all()) for n, keep in mask.items()))
        return False


class Saves:
    """A level's checkpoints: every one kept; ``stop_after``: die after saving that step."""

    def __init__(self, stop_after=None):
        self.all, self.stop_after = [], stop_after

    def load(self):
        return self.all[-1] if self.all else None

    def save(self, tensors, meta):
        self.all.append((copy.deepcopy(tensors), copy.deepcopy(meta)))
        if self.stop_after is not None and meta["step"] >= self.stop_after:
            raise KeyboardInterrupt


def first_layer(model):
    return prunable_names(model)[0]


# -- tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("density", [1.0, 0.5])
@pytest.mark.parametrize("opt", [SGD, ADAM], ids=["sgd", "adam"])
def test_a_pruning_update_keeps_pruned_weights_zero_and_counts(digits, small_mlp, opt, density):
    model, cfg = small_mlp, TrainConfig(batch_size=32, **opt)
    mask = pruned(model, 1 - density)  # 1.0: the layer kept whole until the update
    layer = first_layer(model)
    updates = PruneHalf(layer, at=20)
    watch = Watch(mask, updates)
    hist = train_level(model, digits, cfg, mask, Span(0, 60, 30, 10, 10**6), seed=0, level=1,
                       callbacks=[watch], mask_updates=updates)
    assert len(watch.ok) == 60 and all(watch.ok)
    assert [(r["step"], r["mask_updates"]) for r in hist] == [
        (0, 0), (10, 0), (20, 1), (30, 1), (40, 1), (50, 1), (60, 1)]
    # The job's mask is the last one: exact counts per layer.
    final = updates.made[-1][1]
    before = mask.kept()
    assert final.kept() == {n: (k - k // 2 if n == layer else k) for n, k in before.items()}
    assert final.is_subset_of(mask)
    final.check(model)
    survivors = model.get_parameter(layer)[final[layer]]
    assert bool((survivors != 0).all())  # and the survivors trained on


@pytest.mark.parametrize("opt", [SGD, ADAM], ids=["sgd", "adam"])
def test_changed_positions_start_from_zero_state(digits, small_mlp, opt):
    """Right after the update (the checkpoint at its step): dropped and regrown positions
    have weight 0 and optimizer moments 0; the regrown then train."""
    model, cfg = small_mlp, TrainConfig(batch_size=32, **opt)
    mask, layer = pruned(model, 0.5), first_layer(small_mlp)
    updates = GrowByGradient(layer)
    saves = Saves(stop_after=20)
    watch = Watch(mask, updates)
    span = Span(0, 60, 30, 10, 20)
    with pytest.raises(KeyboardInterrupt):
        train_level(model, digits, cfg, mask, span, seed=0, level=1, checkpoints=saves,
                    callbacks=[watch], mask_updates=updates)
    (tensors, meta), = saves.all
    (_, new), = updates.made
    old = mask[layer]
    changed = new[layer] != old
    grown = new[layer] & ~old
    assert int(changed.sum()) == 16 and int(grown.sum()) == 8
    assert meta["step"] == 20 and meta["mask_updates"]["count"] == 1
    assert torch.equal(tensors[f"mask.{layer}"], new[layer])  # the mask of now is saved
    assert not tensors[f"model.{layer}"][~new[layer] | changed].any()
    for key in MOMENTS[opt["optimizer"]]:
        state = tensors[f"optim.{key}.{layer}"]
        assert not state[changed].any()
        assert state[new[layer] & ~changed].ne(0).float().mean() > 0.9  # the rest kept
    # RigL's gradients: those of the step's backward pass, before masking (dense).
    assert torch.equal(updates.seen[layer], watch.grads[19][layer])
    assert updates.seen[layer][~old].ne(0).any()
    # Resumed, the regrown weights train from 0.
    saves.stop_after = None
    resumed = GrowByGradient(layer)
    train_level(model, digits, cfg, mask, span, seed=0, level=1, checkpoints=saves,
                mask_updates=resumed)
    assert model.get_parameter(layer)[grown].ne(0).all()
    new.check(model)


def test_drop_and_grow_keeps_counts_and_reports_the_last_mask(digits):
    cfg = TrainConfig(batch_size=32, **ADAM)
    (job,) = jobs(digits, mlp, [0], cfg, Span(0, 80, 30, 20, 10**6),
                  mask_updates=RandomSwap(steps=(20, 60), n=10))
    start = job.mask
    (hist,) = train_stack([job])
    assert [r["mask_updates"] for r in hist] == [0, 1, 1, 2, 2]
    assert job.mask is not start and job.mask.kept() == start.kept()
    assert job.mask == job.mask_updates.made[-1][1]
    for n in start:  # 10 dropped and 10 regrown per update, possibly back and forth
        assert 0 < int((job.mask[n] != start[n]).sum()) <= 40
    job.mask.check(job.model)


@pytest.mark.parametrize("updates", ["swap", "rigl"])
def test_resume_after_an_update_is_bit_identical(digits, updates):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.3), nn.ReLU(),
                         nn.Linear(32, 10))
    mask = pruned(base, 0.5)
    cfg = TrainConfig(batch_size=32, **ADAM)
    span = Span(0, 90, 30, 20, 25)  # checkpoints at 25, 50, 75; updates at 20 and 60

    def make():
        return (RandomSwap(steps=(20, 60), n=6, seed=1) if updates == "swap"
                else GrowByGradient("1.weight", steps=(20, 60)))

    straight = copy.deepcopy(base)
    done = make()
    h1 = train_level(straight, digits, cfg, mask, span, seed=3, level=2, mask_updates=done)

    saves = Saves(stop_after=45)
    with pytest.raises(KeyboardInterrupt):
        train_level(copy.deepcopy(base), digits, cfg, mask, span, seed=3, level=2,
                    checkpoints=saves, mask_updates=make())
    assert saves.all[-1][1]["step"] == 50 and saves.all[-1][1]["mask_updates"]["count"] == 1
    saves.stop_after = None
    resumed, again = copy.deepcopy(base), make()  # a fresh process: only the checkpoint
    h2 = train_level(resumed, digits, cfg, mask, span, seed=3, level=2, checkpoints=saves,
                     mask_updates=again)
    assert h1 == h2
    assert states_equal(straight.state_dict(), resumed.state_dict())
    (_, last), = again.made  # the update after the checkpoint, from its state
    assert last == done.made[-1][1] and len(done.made) == 2
    if updates == "swap":
        assert again.calls == done.calls == 2


def test_an_update_never_due_changes_nothing(digits, small_mlp):
    # Both dense-masked: a level with mask updates never takes the sparse kernels.
    cfg = TrainConfig(batch_size=32, kernels="dense", **ADAM)
    mask, span = pruned(small_mlp, 0.5), Span(0, 40, 30, 20, 10**6)
    plain, never = copy.deepcopy(small_mlp), copy.deepcopy(small_mlp)
    h1 = train_level(plain, digits, cfg, mask, span, seed=0, level=1)
    h2 = train_level(never, digits, cfg, mask, span, seed=0, level=1, mask_updates=Never())
    assert [{k: v for k, v in r.items() if k != "mask_updates"} for r in h2] == h1
    assert [r["mask_updates"] for r in h2] == [0, 0, 0]
    assert states_equal(plain.state_dict(), never.state_dict())


def test_stacked_jobs_with_mask_updates_equal_one_at_a_time(digits, monkeypatch):
    cfg = TrainConfig(batch_size=32, kernels="dense", **SGD)  # "alone" as the stack trains
    span = Span(0, 60, 30, 20, 10**6)

    def make():
        return jobs(digits, mlp, [0, 1, 2], cfg, span)

    stacked, alone = make(), make()
    starts = [j.mask for j in stacked]
    for k, (a, b) in enumerate(zip(stacked, alone, strict=True)):
        a.mask_updates = RandomSwap(steps=(20, 40), n=5, seed=k)
        b.mask_updates = RandomSwap(steps=(20, 40), n=5, seed=k)
    stacked[1].mask_updates = None  # one member keeps its mask
    alone[1].mask_updates = None
    sizes = record_stack_sizes(monkeypatch)
    out = train_stack(stacked)
    assert sizes == [3]
    for a, b, hist in zip(stacked, alone, out, strict=True):
        (ref,) = train_stack([b])
        assert [r["step"] for r in hist] == [r["step"] for r in ref]
        for r, e in zip(hist, ref, strict=True):
            assert r == pytest.approx(e, rel=1e-4, abs=1e-5, nan_ok=True)
        assert a.mask == b.mask
        a.mask.check(a.model)
        assert close(a.model, b.model, ATOL)
    assert [j.mask == m for j, m in zip(stacked, starts, strict=True)] == [False, True, False]


class Misshapen(Never):
    def due(self, step):
        return step == 5

    def update(self, step, weights, mask, gradients):
        return Mask({n: k[:1] for n, k in mask.items()})


def test_a_misshapen_mask_is_a_clear_error(digits, small_mlp):
    with pytest.raises(ModelError, match="mask update at step 5 gives .* the shape"):
        train_level(small_mlp, digits, TrainConfig(batch_size=32), pruned(small_mlp),
                    Span(0, 10, 30, 10, 10**6), seed=0, level=1, mask_updates=Misshapen())
