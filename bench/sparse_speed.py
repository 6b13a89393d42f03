"""Sparse kernels against the dense-masked trainer: the training step, and a whole IMP run.

Step: lth's own training step (``Stepper.train_step``: forward, backward, gradient masks,
Adam) of one trial on one fixed batch of 60, with ``train.kernels = "dense"`` (the masked
dense trainer) and ``"sparse"`` (every pruned ``Linear`` layer on the sparse kernels), for
LeNet-300-100 (784-300-100-10), Conv-2 (CIFAR shapes: its convolutions stay dense, its
Linear layers hold 91% of its weights) and VGG-11 at 1/8 width with BatchNorm (28x28: all
but 2% of its weights are convolutions), at each density: every prunable layer keeps that
share of its weights (the output layer twice that, as the paper prunes it at half the
rate), drawn at random. The contestants alternate, ``--rounds`` rounds of ``--steps`` steps
each after a warm-up (fewer steps for the conv nets); the table shows the median
milliseconds per step of ``"dense"``, ``"sparse"`` and ``"auto"`` (which picks per layer,
:func:`lth.train.sparse_layers`) and the speed-ups over dense.

Run: a 20-level IMP run of LeNet-300-100 (Fashion-MNIST when installed, else digits;
rate 0.2, output 0.1, ``--level-steps`` iterations per level) end to end, levels 0-20 with
evaluation and the store, once with ``kernels = "auto"`` and once with ``"dense"``, into
fresh stores, alternating when ``--run-rounds`` > 1. Per-level test accuracies of the two
are printed side by side (they differ by float rounding only).

The last line is one JSON object: ``{"step_speedup": {"0.2": .., "0.1": .., "0.02": ..},
"run_speedup": ..}`` (LeNet-300-100's step ratios, and the run's).

    .venv/bin/python bench/sparse_speed.py            # about 6 minutes
    .venv/bin/python bench/sparse_speed.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from torch import nn

import lth
from lth.config import TrainConfig
from lth.data import Data
from lth.masks import Mask, prunable_names
from lth.train import Job, Span
from lth.train.loop import _stepper
from lth.train.slot import Slot

DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
NETS = {"lenet_300_100": ((1, 28, 28), {}), "conv2": ((3, 32, 32), {}),
        "vgg11_bn": ((1, 28, 28), {"width": 0.125})}
BATCH = 60
STEP_SCALE = {"lenet_300_100": 1.0, "conv2": 0.03, "vgg11_bn": 0.2}  # of --steps: ~equal time


def random_data(shape: tuple[int, ...], n: int = 600) -> Data:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)
    return lth.from_arrays(x, y, x[:BATCH], y[:BATCH], num_classes=10)


def keeping(model: nn.Module, density: float) -> Mask:
    g = torch.Generator().manual_seed(1)
    names = prunable_names(model)
    return Mask({n: torch.rand(model.get_parameter(n).shape, generator=g)
                 < min(1.0, density * (2 if n == names[-1] else 1)) for n in names})


def step_ms(net: str, density: float, kernels: str, steps: int, rounds: int) -> float:
    shape, options = NETS[net]
    data = random_data(shape)
    model = lth.create_model(net, input_shape=shape, num_classes=10, **options)
    mask = keeping(model, density)
    cfg = TrainConfig(batch_size=BATCH, kernels=kernels)
    job = Job(model, data, cfg, mask, Span(0, 10**9, 10, 10**9, 10**9), seed=0, level=1)
    stepper = _stepper([Slot(job)])
    x, y = data.prepare(data.x_train[:BATCH]), data.y_train[:BATCH]
    times = []
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        for s in range(steps):
            stepper.train_step(x, y, step=s, lr=1e-3)
        if r:  # the first round warms up (and compiles the kernels)
            times.append((time.perf_counter() - t0) / steps * 1e3)
    stepper.without([0])
    return statistics.median(times)


def step_table(nets: list[str], densities: tuple[float, ...], steps: int, rounds: int
               ) -> dict[str, dict[float, float]]:
    """Per net and density the three kernel choices' step times; returns the sparse
    speed-ups."""
    print(f"{'net':<14} {'density':>8} {'dense ms':>9} {'sparse ms':>10} {'auto ms':>8} "
          f"{'sparse':>7} {'auto':>6}")
    out: dict[str, dict[float, float]] = {}
    kinds = ["dense", "sparse", "auto"]
    for net in nets:
        n = max(2, int(steps * STEP_SCALE[net]))
        for d in densities:
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for r in range(len(kinds)):  # each contestant goes first once
                for kernels in kinds[r:] + kinds[:r]:
                    times[kernels].append(step_ms(net, d, kernels, n, rounds))
            dense, sparse, auto = (min(times[k]) for k in kinds)
            out.setdefault(net, {})[d] = dense / sparse
            print(f"{net:<14} {d:>8.2f} {dense:>9.3f} {sparse:>10.3f} {auto:>8.3f} "
                  f"{dense / sparse:>6.2f}x {dense / auto:>5.2f}x", flush=True)
    return out


def imp_run(kernels: str, level_steps: int, levels: int, data: Data) -> tuple[float, list]:
    model = lth.create_model("lenet_300_100", input_shape=data.input_shape, num_classes=10)
    train = {"batch_size": BATCH, "duration": f"{level_steps}it",
             "eval_every": f"{max(level_steps // 2, 1)}it", "kernels": kernels}
    exp = lth.LotteryModel(model, data, train=train, levels=levels,
                           prune={"rate": 0.2, "output_rate": 0.1},
                           initializer="xavier_normal", name=f"bench-{kernels}")
    with tempfile.TemporaryDirectory() as store:
        t0 = time.perf_counter()
        table = exp.run(store=store, progress=False).table()
        seconds = time.perf_counter() - t0
    return seconds, table["final_test_acc"].tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes and steps (< 1 min)")
    ap.add_argument("--steps", type=int, default=100, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--levels", type=int, default=20)
    ap.add_argument("--level-steps", type=int, default=300)
    ap.add_argument("--run-rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    nets, densities = list(NETS), DENSITIES
    if args.quick:
        nets, densities = ["lenet_300_100"], (1.0, 0.2, 0.1, 0.02)
        args.steps, args.rounds, args.level_steps = 40, 2, 100
    steps = step_table(nets, densities, args.steps, args.rounds)

    try:
        data = lth.load_dataset("fashion_mnist", val_size=5000, download=False)
    except Exception:  # noqa: BLE001 - not installed here: the small digits set
        data = lth.load_digits()
    runs: dict[str, list[float]] = {"auto": [], "dense": []}
    accuracies = {}
    for r in range(args.run_rounds):
        for kernels in (("auto", "dense") if r % 2 == 0 else ("dense", "auto")):
            seconds, accuracies[kernels] = imp_run(kernels, args.level_steps, args.levels,
                                                   data)
            runs[kernels].append(seconds)
            print(f"IMP {args.levels} levels x {args.level_steps} it, kernels={kernels}: "
                  f"{seconds:.1f} s", flush=True)
    print("level  acc(dense)  acc(auto)")
    for lv, (a, b) in enumerate(zip(accuracies["dense"], accuracies["auto"], strict=True)):
        print(f"{lv:>5}  {a:>10.4f}  {b:>9.4f}")
    gap = max(abs(a - b) for a, b in zip(accuracies["dense"], accuracies["auto"], strict=True))
    run_speedup = min(runs["dense"]) / min(runs["auto"])
    print(f"run speed-up {run_speedup:.2f}x; largest per-level accuracy difference {gap:.4f}")
    lenet = steps["lenet_300_100"]
    print(json.dumps({"step_speedup": {str(d): round(lenet[d], 2) for d in (0.2, 0.1, 0.02)},
                      "run_speedup": round(run_speedup, 2)}))


if __name__ == "__main__":
    main()
