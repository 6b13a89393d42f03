"""Many trials at once: sequential vs process pool vs stacked vs pool+stacked.

A ``LotteryRobust`` of ``--seeds`` seeds (and a ``LotterySession`` of a ticket and two
controls at those seeds) of LeNet-300-100 on Fashion-MNIST (digits when it is not
installed), Adam 1.2e-3, batch 60, ``--iterations`` per level, ``--levels`` pruning levels.
Each contestant runs in a fresh subprocess into its own store, one after another:

* ``sequential``: one trial at a time in one process (``--executor sequential --stack 1``);
* ``pool``: ``--workers`` processes, one trial each at a time (``--stack 1``);
* ``stacked``: one process, all trials of a kind stacked (``--stack N``);
* ``pool+stacked``: ``--workers`` processes, each training a stack.

Reported: wall time, speed-up over ``sequential`` (same run), the peak RSS of the largest
process, that ratio to a single trial's run (``one-trial``), and how many mask entries
(kept or pruned, over every level of every trial) differ from ``sequential``'s: stacked
weights differ by float reassociation, which can move a weight across the threshold.

    .venv/bin/python bench/stack_speed.py --seeds 4 --iterations 1000 --levels 2
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robust_speed import config_text  # the same LeNet-300-100 recipe

SESSION = """
name = "bench_session"
base = "base.toml"
seeds = "0-{last}"
[variants.ticket]
[variants.reinit]
control = "random_reinit"
of = "ticket"
[variants.pruned]
control = "random_prune"
of = "ticket"
"""


def one(kind: str, cfg: Path, seeds: int, store: Path, executor: str, workers: int,
        stack: int) -> None:
    """Run one contestant in this process; print its wall time and peak RSS."""
    import lth

    t0 = time.perf_counter()
    if kind == "robust":
        group = lth.LotteryRobust.from_config(cfg, seeds=range(seeds))
    else:
        group = lth.LotterySession.from_config(cfg)
    result = group.run(store=store, executor=executor, workers=workers, stack=stack)
    wall = time.perf_counter() - t0
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"wall": wall, "rss_mb": max(me, kids) / 1024,
                      "failed": int((result.trials().status != "done").sum())}))


def mask_differences(store: Path, reference: Path) -> tuple[int, int]:
    """(entries that differ, entries) over every level's mask of every trial: the stores
    hold the same runs (stacking is not part of a run's identity)."""
    from safetensors.torch import load_file

    differ = total = 0
    for ref in sorted(reference.glob("*/trials/*/level_*/mask.safetensors")):
        mine = load_file(store / ref.relative_to(reference))
        for name, keep in load_file(ref).items():
            differ += int((mine[name] != keep).sum())
            total += keep.numel()
    return differ, total


def contest(kind: str, cfg: Path, seeds: int, workers: int, tmp: Path,
            per_worker: int) -> dict[str, dict]:
    plans = {"sequential": ("sequential", 1, 1), "pool": ("local", workers, 1),
             "stacked": ("sequential", 1, seeds), "pool+stacked": ("local", workers,
                                                                   per_worker)}
    out = {}
    for name, (executor, w, stack) in plans.items():
        cmd = [sys.executable, __file__, "--one", kind, "--cfg", str(cfg), "--seeds",
               str(seeds), "--store", str(tmp / f"{kind}-{name}"), "--executor", executor,
               "--workers", str(w), "--stack", str(stack)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[name] = json.loads(res.stdout.strip().splitlines()[-1])
        out[name]["masks"] = mask_differences(tmp / f"{kind}-{name}",
                                              tmp / f"{kind}-sequential")
        print(f"  {kind:<9}{name:<14}{out[name]['wall']:8.1f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=1000, help="training steps per level")
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--kinds", default="robust,session")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--executor", help=argparse.SUPPRESS)
    ap.add_argument("--stack", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.one, Path(args.cfg), args.seeds, Path(args.store), args.executor,
            args.workers, args.stack)
        return

    import lth

    try:
        lth.load_dataset("fashion_mnist", val_size=5000, download=False)
        dataset = "fashion_mnist"
    except lth.LTHError:
        dataset = "digits"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "base.toml").write_text(config_text(dataset, args.iterations, args.levels))
        (tmp / "session.toml").write_text(SESSION.format(last=args.seeds - 1))
        print(f"{args.seeds} seeds x {args.levels + 1} levels x {args.iterations} iterations, "
              f"LeNet-300-100 on {dataset}, {args.workers} workers, 1 torch thread each")
        per_worker = math.ceil(args.seeds / args.workers)
        single = subprocess.run(
            [sys.executable, __file__, "--one", "robust", "--cfg", str(tmp / "base.toml"),
             "--seeds", "1", "--store", str(tmp / "single"), "--executor", "sequential",
             "--workers", "1", "--stack", "1"], capture_output=True, text=True, check=True)
        base_rss = json.loads(single.stdout.strip().splitlines()[-1])["rss_mb"]
        results = {}
        for kind in args.kinds.split(","):
            cfg = tmp / ("base.toml" if kind == "robust" else "session.toml")
            results[kind] = contest(kind, cfg, args.seeds, args.workers, tmp, per_worker)
        print(f"\none trial alone: peak RSS {base_rss:.0f} MB\n")
        print(f"{'kind':<9}{'contestant':<14}{'wall s':>8}{'speed-up':>10}{'peak RSS MB':>13}"
              f"{'x one trial':>13}{'mask entries differing':>26}")
        for kind, res in results.items():
            ref = res["sequential"]
            for name, r in res.items():
                differ, total = r["masks"]
                note = f"{differ} of {total} ({differ / total:.4%})"
                if r["failed"]:
                    note += f"; {r['failed']} trials failed"
                print(f"{kind:<9}{name:<14}{r['wall']:>8.1f}{ref['wall'] / r['wall']:>9.2f}x"
                      f"{r['rss_mb']:>13.0f}{r['rss_mb'] / base_rss:>12.2f}x{note:>26}")


if __name__ == "__main__":
    main()
