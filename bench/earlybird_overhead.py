"""Cost of the early-bird search: a level trained with the search monitor against the same
level without it, in one process.

Both contestants train LeNet-300-100 on Fashion-MNIST (scikit-learn's digits with a
64-300-100-10 MLP when Fashion-MNIST is not installed) with Adam 1.2e-3, batch 60, for
``--steps`` steps from the same initial weights, through ``lth.train.train_level``:

* ``plain``: no monitor;
* ``search``: the early-bird monitor of an IMP run pruning 20% per layer, checking every
  ``--every`` steps (the candidate mask is the exact next-level mask: scores, seeded
  top-k, packing and distances to every kept mask). ``epsilon = 0`` so it never stops
  early and both train the same number of steps.

They alternate for ``--rounds`` rounds (order flipped each round); the table gives median
seconds and the ratio search / plain, and the cost of one check.

    .venv/bin/python bench/earlybird_overhead.py
    .venv/bin/python bench/earlybird_overhead.py --every 50 --steps 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import lth
from lth.config import PruneConfig, TrainConfig
from lth.errors import DataError
from lth.experiment.early import make_search
from lth.masks import Mask, prunable_names
from lth.pruning import make_groups
from lth.state import get_state
from lth.train import Span, train_level


def load() -> tuple[lth.Data, str]:
    try:
        return lth.load_dataset("fashion_mnist", val_size=0, download=False), "fashion_mnist"
    except DataError:
        return lth.load_digits(), "digits"


def run_once(model0, data, cfg: TrainConfig, steps: int, every: int | None) -> tuple[float, int]:
    model = copy.deepcopy(model0)
    names = prunable_names(model)
    mask = Mask.ones(model, names)
    search = None
    if every is not None:
        groups = make_groups("layer", {n: 0.2 for n in names},
                             {n: model.get_parameter(n).numel() for n in names})
        theta0 = get_state(model)
        search = make_search(
            lth.EarlyBirdConfig(enabled=True, every=every, epsilon=0.0), PruneConfig(),
            groups, names, 0, mask, lambda: theta0, 0,
            spe=len(data.y_train) // cfg.batch_size, after=0, model=model)
    span = Span(start=0, end=steps, steps_per_epoch=len(data.y_train) // cfg.batch_size,
                eval_every=steps, checkpoint_every=steps)
    t0 = time.perf_counter()
    train_level(model, data, cfg, mask, span, seed=0, level=0, callbacks=[search])
    return time.perf_counter() - t0, 0 if search is None else len(search.steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data, name = load()
    model0 = lth.create_model("lenet_300_100" if name == "fashion_mnist" else "mlp",
                              input_shape=data.input_shape, num_classes=10,
                              **({} if name == "fashion_mnist" else {"hidden": (300, 100)}))
    cfg = TrainConfig(lr=1.2e-3, batch_size=60, eval_batch_size=4096)
    run_once(model0, data, cfg, 50, None)  # warm-up
    times: dict[str, list[float]] = {"plain": [], "search": []}
    checks = 0
    for r in range(args.rounds):
        order = ["plain", "search"] if r % 2 == 0 else ["search", "plain"]
        for who in order:
            seconds, n = run_once(model0, data, cfg, args.steps,
                                  args.every if who == "search" else None)
            times[who].append(seconds)
            checks = max(checks, n)
    plain, search = (statistics.median(times[k]) for k in ("plain", "search"))
    print(f"data: {name}, {args.steps} steps, a check every {args.every} steps "
          f"({checks} checks), {args.rounds} rounds, {args.threads} thread(s)")
    print(f"{'contestant':<10} {'median s':>9} {'it/s':>8}")
    for who, t in (("plain", plain), ("search", search)):
        print(f"{who:<10} {t:>9.2f} {args.steps / t:>8.1f}")
    print(f"ratio search / plain: {search / plain:.3f}; "
          f"one check: {1000 * (search - plain) / max(checks, 1):.1f} ms")


if __name__ == "__main__":
    main()
