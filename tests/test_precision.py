"""Mixed precision (train.precision), device choice and the pool's GPU placement, as far
as a CPU machine can check them; tests/test_cuda.py runs the CUDA paths on a GPU."""

from __future__ import annotations

import concurrent.futures as cf
import copy
import multiprocessing as mp
import time

import pytest
import torch
from torch import nn

import lth
from lth import devices
from lth.config import TrainConfig
from lth.execution import Local
from lth.train import Span, precision, stack_key, train_level, train_stack
from lth.train.precision import Precision

from .test_stack import jobs, mlp
from .test_train import Recorder, pruned


def test_loss_scale_follows_torch_grad_scaler(monkeypatch):
    """The same scale, skipped steps and unscaled gradients as torch.amp.GradScaler."""
    monkeypatch.setattr(precision, "GROWTH_INTERVAL", 3)  # grow within the test
    ours = Precision("fp16", torch.device("cpu"))
    w = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=0.0)
    scaler = torch.amp.GradScaler("cpu", growth_interval=3)
    g = torch.Generator().manual_seed(0)
    for step in range(12):
        grad = torch.randn(3, generator=g)
        if step in (4, 5, 9):
            grad[1] = float("inf")
        w.grad = None
        scaler.scale((w * grad).sum()).backward()  # w.grad: grad times the scale
        scaler.unscale_(opt)
        found = scaler._per_optimizer_states[id(opt)]["found_inf_per_device"]
        took = sum(v.item() for v in found.values()) == 0
        theirs = w.grad.clone()
        scaler.step(opt)
        scaler.update()
        mine = grad * ours.scale
        assert ours.unscale([mine]) == took == (step not in (4, 5, 9))
        if took:
            assert torch.equal(mine, theirs)
        assert ours.scale.item() == scaler.get_scale()
    assert scaler.get_scale() != 2.0**16  # it moved both ways


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_keeps_masks_exact_and_learns(digits, small_mlp, precision):
    cfg = TrainConfig(batch_size=32, optimizer="adam", lr=1e-2, precision=precision)
    span = Span(0, 90, 30, 30, 10**6)
    mask = pruned(small_mlp, 0.5)
    low, full = copy.deepcopy(small_mlp), copy.deepcopy(small_mlp)
    hist = train_level(low, digits, cfg, mask, span, seed=0, level=1)
    ref = train_level(full, digits, TrainConfig(batch_size=32, optimizer="adam", lr=1e-2),
                      mask, span, seed=0, level=1)
    for n, keep in mask.items():
        w = low.get_parameter(n)
        assert w.dtype == torch.float32  # the weights themselves stay float32
        assert not w[~keep].any() and w[keep].all()
    first = next(iter(mask.names()))
    assert not torch.equal(low.get_parameter(first), full.get_parameter(first))  # autocast on
    # the same training, rounded differently: accuracy within a few points of float32
    assert hist[-1]["test_acc"] > 0.8
    assert abs(hist[-1]["test_acc"] - ref[-1]["test_acc"]) < 0.05


def test_fp16_level_resumes_bit_identically_with_its_loss_scale(digits, small_mlp):
    cfg = TrainConfig(batch_size=32, optimizer="adam", lr=1e-2, precision="fp16")
    span = Span(0, 90, 30, 20, 25)
    mask = pruned(small_mlp, 0.5)
    straight = copy.deepcopy(small_mlp)
    h1 = train_level(straight, digits, cfg, mask, span, seed=0, level=1)
    ckpt = Recorder(stop_after=50)
    with pytest.raises(KeyboardInterrupt):
        train_level(copy.deepcopy(small_mlp), digits, cfg, mask, span, seed=0, level=1,
                    checkpoints=ckpt)
    assert {"amp.scale", "amp.growth"} <= set(ckpt.saved[0])
    ckpt.stop_after = None
    resumed = copy.deepcopy(small_mlp)
    assert train_level(resumed, digits, cfg, mask, span, seed=0, level=1,
                       checkpoints=ckpt) == h1
    assert all(torch.equal(straight.state_dict()[k], v)
               for k, v in resumed.state_dict().items())


def test_bf16_trials_stack_and_fp16_trials_train_alone(digits):
    span = Span(0, 60, 30, 20, 10**6)
    bf16 = TrainConfig(batch_size=32, optimizer="adam", lr=1e-2, precision="bf16")
    stacked, alone = jobs(digits, mlp, [0, 1], bf16, span), jobs(digits, mlp, [0, 1], bf16, span)
    assert stack_key(stacked[0]) == stack_key(stacked[1])
    histories = train_stack(stacked)
    for job, ref, hist in zip(stacked, alone, histories, strict=True):
        expected = train_level(ref.model, digits, bf16, ref.mask, span, seed=ref.seed,
                               level=1)
        # bfloat16 keeps 8 bits: reassociated sums differ at its rounding, not float32's
        for r, e in zip(hist, expected, strict=True):
            assert r == pytest.approx(e, abs=2e-2, nan_ok=True)
        for n, keep in job.mask.items():
            assert not job.model.get_parameter(n)[~keep].any()
    fp16 = TrainConfig(batch_size=32, optimizer="adam", lr=1e-2, precision="fp16")
    a, b = jobs(digits, mlp, [0, 1], fp16, span)
    assert stack_key(a) != stack_key(b)


def test_precision_is_checked_and_part_of_the_identity(tmp_path):
    with pytest.raises(lth.ConfigError, match="precision.*fp32, bf16, fp16"):
        lth.ExperimentConfig.from_dict({"train": {"precision": "fp8"}})
    with pytest.raises(lth.ConfigError, match="device"):
        lth.ExperimentConfig.from_dict({"train": {"device": "cuda:x"}})
    ids = {p: lth.LotteryModel.from_config(lth.ExperimentConfig.from_dict(
        {"train": {"duration": "2it", "precision": p}})).spec()["settings"]["train"]
        .get("precision") for p in ("fp32", "bf16")}
    # fp32 is left out (runs made before the setting keep their names); bf16 is named
    assert ids == {"fp32": None, "bf16": "bf16"}


def _device_and_ordinal(want: str) -> tuple[list[int], str]:
    time.sleep(0.2)  # long enough that the other worker, still starting, gets some calls
    return list(devices.WORKER_ORDINAL), str(devices.choose_device(want))


def test_local_pool_numbers_its_workers_for_gpu_placement():
    pool = Local(2)
    try:
        ordinals = set()
        for _ in range(20):
            pending = [pool.submit(_device_and_ordinal, "auto") for _ in range(8)]
            done: list = []
            while len(done) < len(pending):
                done = pool.wait(pending, timeout=1.0)
            for task in done:
                ordinal, device = pool.result(task)
                ordinals.add(tuple(ordinal))
                gpus = torch.cuda.device_count()
                assert device == (f"cuda:{ordinal[0] % gpus}" if gpus else "cpu")
            if len(ordinals) == 2:
                break
        assert ordinals == {(0,), (1,)}
    finally:
        pool.shutdown()
    assert devices.WORKER_ORDINAL == []  # this process is no worker


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU box")
def test_cuda_on_a_machine_without_one_is_refused():
    for want in ("cuda", "cuda:1"):
        with pytest.raises(lth.ConfigError, match="CUDA is not available"):
            devices.choose_device(want)
    assert devices.choose_device("auto") == torch.device("cpu")


def _stack_key_of_received(data: lth.Data, held: list) -> bool:
    """In a worker: is ``data`` (received now) stackable with what an earlier call got?"""
    model = mlp(0)
    job = lth.train.Job(model, data, TrainConfig(), lth.masks.Mask({}), Span(0, 1, 1, 1, 1),
                        seed=0, level=1)
    if not held:
        held.append(job)
        return data.x_train.is_shared()
    return stack_key(job) == stack_key(held[0])


_HELD: list = []


def _received(data: lth.Data) -> bool:
    return _stack_key_of_received(data, _HELD)


def test_in_memory_data_reaches_workers_through_shared_memory(digits):
    """Data in the parent goes to pool workers as shared memory, not a copy per trial: the
    parent's tensors move to shared memory, and a worker that receives the same data twice
    sees the same tensors (so trials of separate submissions can stack)."""
    data = copy.copy(digits)
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        assert pool.submit(_received, data).result()
        assert pool.submit(_received, data).result()
    assert data.x_train.is_shared()
