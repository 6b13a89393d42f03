"""The CUDA paths: device placement, stacked training, mixed precision and the pool's GPU
placement on a GPU. Skipped on machines without CUDA (marker ``cuda``)."""

from __future__ import annotations

import concurrent.futures as cf
import copy

import pytest
import torch

from lth.config import TrainConfig
from lth.execution import Local
from lth.experiment import LotteryRobust
from lth.train import Span, stack_key, train_level, train_stack

from .test_groups import BASE
from .test_precision import _device_and_ordinal
from .test_stack import jobs, mlp, record_stack_sizes
from .test_train import Recorder, pruned

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ADAM = {"batch_size": 32, "optimizer": "adam", "lr": 1e-2}
SPAN = Span(0, 60, 30, 20, 10**6)


@pytest.fixture
def gpu_digits(digits):
    return digits.to("cuda")


def on_cuda(job_list):
    for job in job_list:
        job.model.to("cuda")
    return job_list


def test_data_moved_once_per_process_so_trials_can_stack(digits):
    assert digits.to("cuda") is digits.to("cuda")
    a, b = on_cuda(jobs(digits.to("cuda"), mlp, [0, 1], TrainConfig(**ADAM), SPAN))
    assert stack_key(a) == stack_key(b)


def test_a_level_on_cuda_matches_cpu(digits, small_mlp):
    cfg = TrainConfig(**ADAM)
    mask = pruned(small_mlp, 0.5)
    cpu, gpu = copy.deepcopy(small_mlp), copy.deepcopy(small_mlp).to("cuda")
    h_cpu = train_level(cpu, digits, cfg, mask, SPAN, seed=0, level=1)
    h_gpu = train_level(gpu, digits.to("cuda"), cfg, mask, SPAN, seed=0, level=1)
    assert [r["step"] for r in h_cpu] == [r["step"] for r in h_gpu]
    assert h_gpu[-1]["test_acc"] == pytest.approx(h_cpu[-1]["test_acc"], abs=0.03)
    for n, keep in mask.items():
        w = gpu.get_parameter(n)
        assert w.is_cuda and not w[~keep.cuda()].any()
        assert torch.allclose(w.cpu(), cpu.get_parameter(n), atol=1e-3)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_stacked_on_cuda_equals_one_at_a_time(gpu_digits, precision):
    cfg = TrainConfig(precision=precision, **ADAM)
    stacked = on_cuda(jobs(gpu_digits, mlp, [0, 1, 2], cfg, SPAN))
    alone = on_cuda(jobs(gpu_digits, mlp, [0, 1, 2], cfg, SPAN))
    histories = train_stack(stacked)
    tol = 1e-4 if precision == "fp32" else 2e-2
    for job, ref, hist in zip(stacked, alone, histories, strict=True):
        expected = train_level(ref.model, gpu_digits, cfg, ref.mask, SPAN, seed=ref.seed,
                               level=1)
        for r, e in zip(hist, expected, strict=True):
            assert r == pytest.approx(e, abs=tol, nan_ok=True)
        for n, keep in job.mask.items():
            assert not job.model.get_parameter(n)[~keep.cuda()].any()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda_keeps_masks_exact_and_resumes(gpu_digits, small_mlp,
                                                               precision):
    cfg = TrainConfig(precision=precision, **ADAM)
    span = Span(0, 90, 30, 20, 25)
    mask = pruned(small_mlp, 0.5)
    straight = copy.deepcopy(small_mlp).cuda()
    h1 = train_level(straight, gpu_digits, cfg, mask, span, seed=0, level=1)
    assert h1[-1]["test_acc"] > 0.8
    for n, keep in mask.items():
        assert not straight.get_parameter(n)[~keep.cuda()].any()
    ckpt = Recorder(stop_after=50)
    with pytest.raises(KeyboardInterrupt):
        train_level(copy.deepcopy(small_mlp).cuda(), gpu_digits, cfg, mask, span, seed=0,
                    level=1, checkpoints=ckpt)
    ckpt.stop_after = None
    resumed = copy.deepcopy(small_mlp).cuda()
    h2 = train_level(resumed, gpu_digits, cfg, mask, span, seed=0, level=1,
                     checkpoints=ckpt)
    # cuBLAS picks the same kernels in one process: the resumed level is the same
    assert h1 == h2
    assert all(torch.equal(straight.state_dict()[k], v)
               for k, v in resumed.state_dict().items())


def test_robust_seeds_on_cuda_train_as_one_stack(tmp_path, monkeypatch):
    (tmp_path / "base.toml").write_text(BASE + 'device = "cuda"\n')
    robust = LotteryRobust.from_config(tmp_path / "base.toml", seeds=[0, 1, 2])
    sizes = record_stack_sizes(monkeypatch)
    result = robust.run(store=tmp_path / "runs", executor="sequential")  # stack: auto (8)
    assert (result.trials().status == "done").all()
    assert sizes == [3] * 3


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_local_pool_places_workers_on_different_gpus():
    pool = Local(2, gpu=True)
    try:
        seen = {}
        for _ in range(20):
            futures = [pool._pool.submit(_device_and_ordinal, "cuda") for _ in range(8)]
            for f in cf.as_completed(futures):
                ordinal, device = f.result()
                seen[ordinal[0]] = device
            if len(seen) == 2:
                break
        assert seen == {0: "cuda:0", 1: "cuda:1"}
    finally:
        pool.shutdown()
