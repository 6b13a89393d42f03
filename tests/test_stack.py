"""The trainer over named state: the functional optimizer, K trials trained stacked."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import lth
from lth.config import TrainConfig
from lth.errors import TrainingError
from lth.experiment import LotteryRobust
from lth.experiment.trials import Trial
from lth.masks import Mask, prunable_names
from lth.train import Callback, Job, Optimizer, Span, loop, train_level, train_stack

from .test_groups import BASE
from .test_train import OPTIMIZERS, Recorder, pruned

# Stacked training batches the matrix products of K trials: the sums inside them are
# reassociated, so weights agree with one-at-a-time training to ~1e-7 after 60 steps here
# (measured), masks exactly. Before BatchNorm a layer's bias has no effect and a gradient
# of pure rounding noise, which Adam scales up to full-size steps: ~2e-5 apart there.
ATOL = 1e-5
ATOL_BN = 1e-4


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.BatchNorm1d(24), nn.ReLU(),
                         nn.Linear(24, 10))


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: o["optimizer"])
def test_optimizer_equals_torch_fused(opt):
    cfg = TrainConfig(**opt)
    torch.manual_seed(0)
    ref = {"a": torch.randn(5, 3), "b": torch.randn(7)}
    ours = {k: v.clone() for k, v in ref.items()}
    theirs = [nn.Parameter(v.clone()) for v in ref.values()]
    kind = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    extra = ({"momentum": cfg.momentum, "nesterov": cfg.nesterov} if cfg.optimizer == "sgd"
             else {"betas": cfg.betas})
    torch_opt = kind[cfg.optimizer](theirs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    fused=True, **extra)
    optim = Optimizer(cfg, ours)
    for step in range(12):
        grads = [torch.randn_like(v) for v in ref.values()]
        lr = cfg.lr * (0.5 if step > 6 else 1.0)
        for group in torch_opt.param_groups:
            group["lr"] = lr
        for p, g in zip(theirs, grads, strict=True):
            p.grad = g.clone()
        torch_opt.step()
        optim.step(list(ours.values()), [g.clone() for g in grads], lr)
    for p, v in zip(theirs, ours.values(), strict=True):
        assert torch.equal(p.detach(), v)


@pytest.mark.parametrize("opt", OPTIMIZERS[1:3], ids=["sgd", "adam"])
def test_optimizer_on_stacked_state_equals_one_at_a_time(opt):
    cfg = TrainConfig(**opt)
    g = torch.Generator().manual_seed(1)
    alone = [{"w": torch.randn(4, 3, generator=g)} for _ in range(3)]
    grads = [[torch.randn(4, 3, generator=g) for _ in range(3)] for _ in range(5)]
    stacked = {"w": torch.stack([a["w"] for a in alone])}
    opts = [Optimizer(cfg, a) for a in alone]
    together = Optimizer(cfg, stacked)
    for step in range(5):
        for k, o in enumerate(opts):
            o.step([alone[k]["w"]], [grads[step][k].clone()], cfg.lr)
        together.step([stacked["w"]], [torch.stack(grads[step])], cfg.lr)
    # The same elementwise update; the kernels vectorise a longer tensor differently (fused
    # multiply-adds in the vector body, not in the tail), so a few ulps apart.
    assert torch.allclose(stacked["w"], torch.stack([a["w"] for a in alone]), rtol=1e-6,
                          atol=1e-7)
    for k in range(3):  # one trial's slice of the stacked state is its own state
        mine = opts[k].tensors()
        assert mine.keys() == together.tensors(k).keys()
        assert all(torch.allclose(v, mine[key], rtol=1e-6, atol=1e-7)
                   for key, v in together.tensors(k).items())


def jobs(digits, make, seeds, cfg, span, **kwargs):
    out = []
    for s in seeds:
        model = make(s)
        out.append(Job(model, digits, cfg, pruned(model, 0.5, seed=s), span, seed=s,
                       level=1, **kwargs))
    return out


def close(a: nn.Module, b: nn.Module, atol: float = ATOL) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        torch.allclose(sa[k].float(), sb[k].float(), atol=atol, rtol=0) for k in sa)


@pytest.mark.parametrize("make", [mlp, bn_net], ids=["mlp", "batchnorm"])
@pytest.mark.parametrize("opt", OPTIMIZERS[:1] + OPTIMIZERS[2:3], ids=["sgd", "adam"])
def test_stacked_training_equals_one_at_a_time(digits, make, opt):
    cfg = TrainConfig(batch_size=32, **opt)
    span = Span(0, 60, 30, 20, 10**6)
    stacked = jobs(digits, make, [0, 1, 2], cfg, span)
    alone = jobs(digits, make, [0, 1, 2], cfg, span)
    histories = train_stack(stacked)
    for job, ref, hist in zip(stacked, alone, histories, strict=True):
        expected = train_level(ref.model, digits, cfg, ref.mask, span, seed=ref.seed, level=1)
        assert [r["step"] for r in hist] == [r["step"] for r in expected]
        for r, e in zip(hist, expected, strict=True):
            assert r == pytest.approx(e, rel=1e-4, abs=1e-5, nan_ok=True)
        assert close(job.model, ref.model, ATOL if make is mlp else ATOL_BN)
        for n, keep in job.mask.items():  # pruned weights exactly zero
            assert not job.model.get_parameter(n)[~keep].any()


def test_stacked_resume_after_a_crash_is_bit_identical(digits):
    # Dense kernels: under "auto" these sparse trials would train alone, not stacked.
    cfg = TrainConfig(batch_size=32, optimizer="adam", lr=1e-2, kernels="dense")
    span = Span(0, 90, 30, 20, 25)
    straight = jobs(digits, mlp, [0, 1, 2], cfg, span)
    h1 = train_stack(straight)

    crashed = jobs(digits, mlp, [0, 1, 2], cfg, span)
    ckpts = [Recorder() for _ in crashed]
    ckpts[-1].stop_after = 45  # every member has saved step 50 when the process dies
    for job, c in zip(crashed, ckpts, strict=True):
        job.checkpoints = c
    with pytest.raises(KeyboardInterrupt):
        train_stack(crashed)
    assert {c.saved[1]["step"] for c in ckpts} == {50}
    ckpts[-1].stop_after = None
    resumed = jobs(digits, mlp, [0, 1, 2], cfg, span)  # fresh models: only checkpoints
    for job, c in zip(resumed, ckpts, strict=True):
        job.checkpoints = c
    h2 = train_stack(resumed)
    assert h1 == h2
    for a, b in zip(straight, resumed, strict=True):
        assert all(torch.equal(a.model.state_dict()[k], v)
                   for k, v in b.model.state_dict().items())


class StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def after_step(self, step, state):
        return step == self.step


def test_a_member_that_stops_or_diverges_leaves_the_stack(digits):
    cfg = TrainConfig(batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9)
    span = Span(0, 60, 30, 20, 10**6)
    members = jobs(digits, mlp, [0, 1, 2], cfg, span)
    members[0].callbacks = [StopAt(13)]
    with torch.no_grad():  # member 2 overflows at its first step
        for p in members[2].model.parameters():
            p.mul_(1e30)
    alone = jobs(digits, mlp, [0, 1], cfg, span)
    out = train_stack(members)
    assert [r["step"] for r in out[0]] == [0, 13]
    assert isinstance(out[2], TrainingError) and "diverged" in str(out[2])
    ref1 = train_level(alone[1].model, digits, cfg, alone[1].mask, span, seed=1, level=1)
    assert [r["step"] for r in out[1]] == [r["step"] for r in ref1] == [0, 20, 40, 60]
    assert close(members[1].model, alone[1].model)
    ref0 = train_level(alone[0].model, digits, cfg, alone[0].mask, span, seed=0, level=1,
                       callbacks=[StopAt(13)])
    assert out[0][-1] == pytest.approx(ref0[-1], rel=1e-4, abs=1e-5, nan_ok=True)
    assert close(members[0].model, alone[0].model)


def test_checkpoint_of_an_older_format_restarts_the_level(digits, small_mlp):
    """Early development checkpoints kept optimizer state by the parameter's index
    (``opt.<i>.<key>``): not translated, the level restarts with the same numbers (it
    would otherwise go on with fresh optimizer state)."""
    cfg = TrainConfig(batch_size=32, optimizer="adam", lr=1e-2)
    span = Span(0, 60, 30, 20, 25)
    mask = pruned(small_mlp, 0.5)
    straight = copy.deepcopy(small_mlp)
    h1 = train_level(straight, digits, cfg, mask, span, seed=0, level=1)
    ckpt = Recorder(stop_after=25)
    with pytest.raises(KeyboardInterrupt):
        train_level(copy.deepcopy(small_mlp), digits, cfg, mask, span, seed=0, level=1,
                    checkpoints=ckpt)
    names = [n for n, p in small_mlp.named_parameters() if p.requires_grad]
    tensors, meta = ckpt.saved
    old = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            k, n = key[6:].split(".", 1)
            old[f"opt.{names.index(n)}.{k}"] = v
        else:
            old[key] = v
    ckpt.saved, ckpt.stop_after = (old, meta), None
    resumed = copy.deepcopy(small_mlp)
    began = []

    class Began(Callback):
        def begin(self, step, state):
            began.append(step)

    assert train_level(resumed, digits, cfg, mask, span, seed=0, level=1, checkpoints=ckpt,
                       callbacks=[Began()]) == h1
    assert began == [0]
    assert all(torch.equal(straight.state_dict()[k], v)
               for k, v in resumed.state_dict().items())


def test_prunable_names_unchanged_by_stacking(digits):
    # the stacked step reads masks by parameter name: a mask over a subset of layers
    cfg = TrainConfig(batch_size=32, optimizer="adam", lr=1e-2)
    span = Span(0, 30, 30, 30, 10**6)
    members = jobs(digits, mlp, [0, 1], cfg, span)
    for job in members:
        first = prunable_names(job.model)[0]
        job.mask = Mask({first: job.mask[first]})
    train_stack(members)
    for job in members:
        (n, keep), = job.mask.items()
        assert not job.model.get_parameter(n)[~keep].any()


# -- groups: seeds and controls trained stacked in one worker ---------------------------------
GROUP_BASE = BASE + 'checkpoint_every = "10it"\n'  # mid-level checkpoints too


def level_files(result, name):
    runs = [(row.seed, lth.Result(row.run_dir)) for row in result.trials().itertuples()]
    return {(seed, level): (r.mask(level).tensors() if name == "mask" else r.weights(level))
            for seed, r in runs for level in range(3)}


def record_stack_sizes(monkeypatch) -> list[int]:
    """The size of every stack the trainer forms from now on (appended as they form)."""
    sizes: list[int] = []

    class Recording(loop.Stacked):
        def __init__(self, slots, *args):
            sizes.append(len(slots))
            super().__init__(slots, *args)

    monkeypatch.setattr(loop, "Stacked", Recording)
    return sizes


def test_robust_run_stacked_equals_one_at_a_time(tmp_path, monkeypatch):
    (tmp_path / "base.toml").write_text(GROUP_BASE)
    robust = LotteryRobust.from_config(tmp_path / "base.toml", seeds=[0, 1, 2])
    alone = robust.run(store=tmp_path / "alone", executor="sequential", stack=1)
    sizes = record_stack_sizes(monkeypatch)
    stacked = robust.run(store=tmp_path / "stacked", executor="sequential", stack=3)
    assert sizes == [3] * 3  # every level of the three seeds in one stack
    assert alone.path.name == stacked.path.name  # stacking is not part of the identity
    masks, ref = level_files(stacked, "mask"), level_files(alone, "mask")
    assert masks.keys() == ref.keys()
    for key in masks:
        assert all(torch.equal(masks[key][n], ref[key][n]) for n in ref[key])
    finals, ref = level_files(stacked, "final"), level_files(alone, "final")
    for key in finals:
        assert all(torch.allclose(finals[key][n], ref[key][n], atol=ATOL, rtol=0)
                   for n in ref[key])
    a, b = alone.table(), stacked.table()
    assert np.allclose(a.final_test_acc, b.final_test_acc, atol=1e-6)
    assert list(a.pct_remaining) == list(b.pct_remaining)


def test_the_driver_spreads_stacks_over_free_workers():
    from lth.experiment.group import _Driver

    trials = [Trial(f"v-s{s}", "v", s) for s in range(5)]
    driver = _Driver.__new__(_Driver)
    driver.level0, driver.stack = {"v": "same"}, 4
    sizes = [len(m) for _, m in driver.stacks([(t, None) for t in trials], free=2)]
    assert sizes == [3, 2]  # both workers busy, each with a stack
    sizes = [len(m) for _, m in driver.stacks([(t, None) for t in trials], free=1)]
    assert sizes == [3]  # one worker: stacks of at most 4, evened out (3 now, 2 later)
    driver.stack = 1
    assert [len(m) for _, m in driver.stacks([(t, None) for t in trials], free=8)] == [1] * 5


def test_a_level_with_nothing_masked_trains(digits):
    """An empty mask (no prunable layer chosen) used to fail in the masking kernel."""
    cfg = TrainConfig(batch_size=32, optimizer="adam", lr=1e-2)
    span = Span(0, 30, 30, 30, 10**6)
    model = mlp(0)
    before = copy.deepcopy(model)
    hist = train_level(model, digits, cfg, Mask({}), span, seed=0, level=1)
    assert [r["step"] for r in hist] == [0, 30]
    assert not torch.equal(model[1].weight, before[1].weight)
