"""Training-loop speed: lth's ``train_level`` against a minimal hand-written PyTorch loop.

Both contestants train LeNet-300-100 (``lth.create_model("lenet_300_100")``, copied from one
initial model so the weights start identical) with Adam (lr 1.2e-3), batch 60, on the same
in-memory tensors, for the same number of steps, in the same process:

* ``lth``: ``lth.train.train_level`` with an active mask that prunes half of every weight
  matrix at random, so gradients and weights are masked at every step. It also evaluates
  the test split twice (at step 0 and at the end); that cost is measured on its own and
  printed so it can be judged against the total.
* ``minimal``: a plain loop - per-epoch ``torch.randperm`` from a seeded generator, index
  slices, forward, ``F.cross_entropy``, ``zero_grad(set_to_none=True)``, backward, step. No
  masks, no evaluation, no bookkeeping; ``torch.optim.Adam`` with its defaults, as a user
  would write it.
* ``minimal-fused``: the same loop with ``Adam(fused=True)``, the optimizer lth itself
  uses, so the ratio against it isolates lth's own per-step overhead (masks included).

After one short warm-up of each, the two run alternately (the order flips every round) for
``--rounds`` rounds; each round starts both from fresh copies of the initial model. The
table shows each contestant's median iterations per second and median seconds, and the
ratio of the medians: lth's time over the minimal loop's (the target is <= 1.15).

Data (``--data auto``): Fashion-MNIST when its IDX files (``train-images-idx3-ubyte`` and
``train-labels-idx1-ubyte``, optionally ``.gz``; ``t10k-*`` for the test split) are found in
``--data-dir`` (default ``/usr/share/datasets/fashion-mnist``), else scikit-learn's 8x8
digits via ``lth.load_digits`` (the model is then 64-300-100-10). ``--data random`` uses
Gaussian 28x28 images with random labels, which times the full 784-300-100-10 model when
Fashion-MNIST is not installed; the speed of training does not depend on what the pixels
show.

Run from the repository root::

    .venv/bin/python bench/train_speed.py
    .venv/bin/python bench/train_speed.py --data random --steps 3000 --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import gzip
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lth
from lth.config import TrainConfig
from lth.masks import Mask
from lth.train import Span, evaluate, train_level

BATCH = 60
LR = 1.2e-3
FASHION_DIR = "/usr/share/datasets/fashion-mnist"

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (optionally gzipped): magic, big-endian uint32 dims, then data."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(dims)) if dims else 1
    if len(raw) != header + count * dtype.itemsize:
        raise ValueError(f"{path}: dims {dims} need {count * dtype.itemsize} data bytes, "
                         f"file has {len(raw) - header}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def load_fashion(root: Path, test_size: int) -> lth.Data | None:
    """Fashion-MNIST as (N, 1, 28, 28) float32 standardised by the training set, or None."""
    train_x, train_y = (_find_idx(root, s) for s in
                        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))
    if train_x is None or train_y is None:
        return None
    x = read_idx(train_x).astype(np.float32)[:, None] / 255.0
    y = read_idx(train_y).astype(np.int64)
    test_x, test_y = (_find_idx(root, s) for s in
                      ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    if test_x is not None and test_y is not None:
        xt = read_idx(test_x).astype(np.float32)[:, None] / 255.0
        yt = read_idx(test_y).astype(np.int64)
    else:  # no test files: hold the last examples of the training files out
        x, xt, y, yt = x[:-test_size], x[-test_size:], y[:-test_size], y[-test_size:]
    mean, std = x.mean(), x.std()
    x, xt = (x - mean) / std, (xt - mean) / std
    return lth.from_arrays(x, y, xt[:test_size], yt[:test_size], val_size=0.0,
                           num_classes=10, name="fashion-mnist")


def load_random(n_train: int, test_size: int, seed: int) -> lth.Data:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + test_size, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n_train + test_size,), generator=g)
    return lth.from_arrays(x[:n_train], y[:n_train], x[n_train:], y[n_train:], val_size=0.0,
                           num_classes=10, name="random 28x28")


def load_data(args: argparse.Namespace) -> tuple[lth.Data, str]:
    if args.data in ("auto", "fashion"):
        data = load_fashion(Path(args.data_dir), args.test_size)
        if data is not None:
            return data, f"Fashion-MNIST from {args.data_dir}"
        if args.data == "fashion":
            raise SystemExit(f"no Fashion-MNIST IDX files in {args.data_dir}")
    if args.data == "random":
        return (load_random(60000, args.test_size, args.seed),
                "random Gaussian 28x28 images, random labels (60000 train)")
    data = lth.load_digits(val_size=0.0)
    note = "" if args.data == "digits" else f" (no Fashion-MNIST in {args.data_dir})"
    return data, "scikit-learn digits 8x8 via lth.load_digits" + note


def random_half_mask(model: nn.Module, seed: int) -> Mask:
    """Keep each prunable weight with probability 1/2 (an active, non-trivial mask)."""
    g = torch.Generator().manual_seed(seed)
    full = Mask.ones(model, lth.prunable_names(model))
    return Mask({name: torch.rand(keep.shape, generator=g) < 0.5 for name, keep in full.items()})


def run_lth(model: nn.Module, data: lth.Data, mask: Mask, steps: int, seed: int) -> float:
    cfg = TrainConfig(optimizer="adam", lr=LR, batch_size=BATCH, eval_batch_size=10000)
    span = Span(start=0, end=steps, steps_per_epoch=len(data.y_train) // BATCH,
                eval_every=steps, checkpoint_every=10**9)
    t0 = time.perf_counter()
    train_level(model, data, cfg, mask, span, seed=seed, level=1)
    return time.perf_counter() - t0


def run_minimal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
                seed: int, fused: bool = False) -> float:
    t0 = time.perf_counter()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=LR, **({"fused": True} if fused else {}))
    per_epoch = len(y) // BATCH
    g = torch.Generator()
    order = torch.empty(0, dtype=torch.long)
    for step in range(steps):
        epoch, off = divmod(step, per_epoch)
        if off == 0:
            g.manual_seed(seed + epoch)
            order = torch.randperm(len(y), generator=g)
        idx = order[off * BATCH:(off + 1) * BATCH]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="training steps per run")
    ap.add_argument("--rounds", type=int, default=3, help="timed runs of each contestant")
    ap.add_argument("--warmup", type=int, default=100, help="steps of the untimed warm-up")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--data", choices=("auto", "fashion", "digits", "random"), default="auto")
    ap.add_argument("--data-dir", default=FASHION_DIR, help="where Fashion-MNIST IDX files are")
    ap.add_argument("--test-size", type=int, default=1000,
                    help="test examples lth evaluates (twice per run)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be >= 1")

    torch.set_num_threads(args.threads)
    data, source = load_data(args)
    in_shape = data.input_shape
    torch.manual_seed(args.seed)
    initial = lth.create_model("lenet_300_100", input_shape=in_shape, num_classes=10)
    mask = random_half_mask(initial, args.seed)
    widths = [m.in_features for m in initial.modules() if isinstance(m, nn.Linear)] + [10]

    print(f"data:    {source}: {len(data.y_train)} train, {len(data.y_test)} test, "
          f"input {tuple(in_shape)}")
    print(f"model:   lenet_300_100 ({'-'.join(map(str, widths))}), Adam lr {LR}, batch {BATCH}")
    print(f"lth:     mask density {mask.density():.3f}; includes 2 evaluations of "
          f"{len(data.y_test)} test examples")
    print(f"run:     {args.steps} steps x {args.rounds} rounds, torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}")

    def lth_run(steps: int) -> tuple[float, nn.Module]:
        model = copy.deepcopy(initial)
        return run_lth(model, data, mask, steps, args.seed), model

    def minimal_run(steps: int, fused: bool = False) -> tuple[float, nn.Module]:
        model = copy.deepcopy(initial)
        return run_minimal(model, data.x_train, data.y_train, steps, args.seed, fused), model

    contestants = {"lth": lth_run, "minimal": minimal_run,
                   "minimal-fused": lambda steps: minimal_run(steps, fused=True)}
    for fn in contestants.values():
        fn(args.warmup)

    probe = copy.deepcopy(initial)
    t0 = time.perf_counter()
    evaluate(probe, data.x_test, data.y_test, 10000)
    eval_s = time.perf_counter() - t0

    times: dict[str, list[float]] = {name: [] for name in contestants}
    final: dict[str, nn.Module] = {}
    for r in range(args.rounds):
        order = list(contestants)[r % 3:] + list(contestants)[:r % 3]  # rotate the order
        for name in order:
            seconds, final[name] = contestants[name](args.steps)
            times[name].append(seconds)
            print(f"  round {r + 1} {name:<14} {seconds:7.3f} s  "
                  f"{args.steps / seconds:8.1f} it/s")

    med = {name: statistics.median(ts) for name, ts in times.items()}
    print()
    print(f"{'contestant':<15}{'median it/s':>12}{'median s':>11}{'test acc':>10}")
    for name in contestants:
        acc = evaluate(final[name], data.x_test, data.y_test, 10000)["acc"]
        print(f"{name:<15}{args.steps / med[name]:>12.1f}{med[name]:>11.3f}{acc:>10.3f}")
    for base in ("minimal", "minimal-fused"):
        ratio = med["lth"] / med[base]
        verdict = "ok" if ratio <= 1.15 else "ABOVE TARGET"
        print(f"ratio (lth time / {base} time): {ratio:.2f}  (target <= 1.15: {verdict})")
    print(f"one evaluation of {len(data.y_test)} test examples: {eval_s * 1e3:.1f} ms "
          f"(lth's 2 are {200 * eval_s / med['lth']:.1f}% of its median time)")


if __name__ == "__main__":
    main()
