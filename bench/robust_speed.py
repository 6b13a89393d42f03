"""Wall time of a robust LeNet-300-100 run: sequential vs a local pool (vs Ray).

The workload: ``--seeds`` seeds (4) of one experiment, each training ``--levels + 1``
levels (``n_levels = 2``: the dense level 0 and two pruned levels, 3 in all) of
``--iterations`` steps (1500) — Fashion-MNIST when installed, else digits; LeNet-300-100,
Adam 1.2e-3, batch 60. Each contestant runs in a fresh process (a cold start, as
``lth robust`` has: imports, data, worker start all counted) into its own fresh store;
contestants alternate, ``--repeat`` rounds, and the speed-up is the median sequential time
over the median time of the contestant. Every contestant must give the same weights as the
sequential run. The machine's load average is printed before and after: on a shared box
the numbers only mean something when it is low. The last line is one JSON object.

    .venv/bin/python bench/robust_speed.py                 # 4 seeds x 3 levels, 2 workers
    .venv/bin/python bench/robust_speed.py --quick         # 200 iterations, 1 round: a smoke
                                                           # test (fixed costs dominate it)
    .venv/bin/python bench/robust_speed.py --repeat 3 --executors sequential,local,ray
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def config_text(dataset: str, iterations: int, levels: int) -> str:
    return f"""
name = "bench_lenet"
n_levels = {levels}
[model]
name = "lenet_300_100"
initializer = "xavier_normal"
[data]
name = "{dataset}"
val_size = {5000 if dataset != "digits" else 0.1}
[train]
optimizer = "adam"
lr = 1.2e-3
batch_size = 60
duration = "{iterations}it"
eval_every = "{max(iterations // 4, 1)}it"
[prune]
rate = 0.2
output_rate = 0.1
"""


def weights(store: Path) -> dict[str, bytes]:
    return {f"{p.parents[1].name}/{p.parent.name}": p.read_bytes()
            for p in sorted(store.glob("*/trials/*/level_*/final.safetensors"))}


def one(cfg: Path, seeds: int, store: Path, executor: str, workers: int) -> None:
    """In a fresh process: one contestant's run, timed from the call to its return."""
    import lth

    robust = lth.LotteryRobust.from_config(cfg, seeds=range(seeds))
    t0 = time.perf_counter()
    robust.run(store=store, executor=executor, workers=workers)
    print(json.dumps({"wall_s": time.perf_counter() - t0}))


def contest(name: str, cfg: Path, args: argparse.Namespace, store: Path) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--one", name, "--cfg", str(cfg), "--seeds",
         str(args.seeds), "--workers", str(args.workers), "--store", str(store)],
        capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])["wall_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=1500, help="training steps per level")
    ap.add_argument("--levels", type=int, default=2, help="n_levels: levels after level 0")
    ap.add_argument("--executors", default="sequential,local")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every contestant")
    ap.add_argument("--quick", action="store_true", help="200 iterations per level, 1 round")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(Path(args.cfg), args.seeds, Path(args.store), args.one, args.workers)
        return
    if args.quick:
        args.iterations, args.repeat = 200, 1
    names = args.executors.split(",")
    if "sequential" not in names:
        names.insert(0, "sequential")

    import lth

    try:
        lth.load_dataset("fashion_mnist", download=False)
        dataset = "fashion_mnist"
    except lth.LTHError:
        dataset = "digits"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cfg = tmp / "bench.toml"
        cfg.write_text(config_text(dataset, args.iterations, args.levels))
        print(f"{args.seeds} seeds x {args.levels + 1} levels x {args.iterations} iterations, "
              f"LeNet-300-100 on {dataset}, {args.workers} workers (1 torch thread each), "
              f"{os.cpu_count()} cores, load average {load_before[0]:.2f}")
        times: dict[str, list[float]] = {n: [] for n in names}
        same: dict[str, bool] = {}
        reference = None
        for round_ in range(args.repeat):
            for name in names:  # alternating: a busy spell hits every contestant alike
                store = tmp / f"{name}-{round_}"
                times[name].append(contest(name, cfg, args, store))
                got = weights(store)
                if reference is None:
                    reference = got
                same[name] = same.get(name, True) and got == reference
                print(f"  round {round_ + 1}  {name:<11} {times[name][-1]:7.1f} s")
    load_after = os.getloadavg()
    base = statistics.median(times["sequential"])
    print(f"\n{'executor':<12}{'median s':>9}{'speed-up':>10}{'same weights':>14}")
    report: dict = {"seeds": args.seeds, "levels": args.levels + 1,
                    "iterations": args.iterations, "workers": args.workers,
                    "dataset": dataset, "cores": os.cpu_count(),
                    "load_before": [round(v, 2) for v in load_before],
                    "load_after": [round(v, 2) for v in load_after]}
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:<12}{median:>9.1f}{base / median:>9.2f}x{str(same[name]):>14}")
        report[f"{name}_s"] = [round(t, 2) for t in ts]
        if name != "sequential":
            report[f"{name}_speedup"] = round(base / median, 3)
            report[f"{name}_same_weights"] = same[name]
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
