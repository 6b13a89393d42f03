"""Wall time of a 4-seed LeNet-300-100 robust run: sequential vs local pool vs Ray.

Every contestant runs the same ``LotteryRobust`` (Fashion-MNIST when installed, else
digits; LeNet-300-100, Adam 1.2e-3, batch 60, ``--iterations`` per level, ``--levels``
pruning levels) into its own fresh store, one after another in this process, and the
table reports each one's wall time and its speed-up over sequential. Per-trial results
are compared too: every executor must give the same weights.

    .venv/bin/python bench/robust_speed.py
    .venv/bin/python bench/robust_speed.py --seeds 4 --workers 2 --iterations 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lth


def config_text(dataset: str, iterations: int, levels: int) -> str:
    return f"""
name = "bench_lenet"
n_levels = {levels}
[model]
name = "lenet_300_100"
initializer = "xavier_normal"
[data]
name = "{dataset}"
val_size = 5000
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


def weights(result: lth.GroupResult) -> dict[str, bytes]:
    return {f"{Path(r).name}/{p.parent.name}": p.read_bytes()
            for r in result.trials().run_dir for p in Path(r).glob("level_*/final.safetensors")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=1500, help="training steps per level")
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--executors", default="sequential,local,ray")
    args = ap.parse_args()

    try:
        lth.load_dataset("fashion_mnist", val_size=5000, download=False)
        dataset = "fashion_mnist"
    except lth.LTHError:
        dataset = "digits"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(config_text(dataset, args.iterations, args.levels))
        robust = lth.LotteryRobust.from_config(cfg, seeds=range(args.seeds))
        print(f"{args.seeds} seeds x {args.levels + 1} levels x {args.iterations} iterations, "
              f"LeNet-300-100 on {dataset}, {args.workers} workers, 1 torch thread each")
        times, results = {}, {}
        for name in args.executors.split(","):
            t0 = time.perf_counter()
            results[name] = robust.run(store=Path(tmp) / name, executor=name,
                                       workers=args.workers)
            times[name] = time.perf_counter() - t0
            print(f"  {name:<11} {times[name]:7.1f} s")
        base = times.get("sequential")
        print(f"\n{'executor':<12}{'wall s':>8}{'speed-up':>10}{'same weights':>14}")
        ref = weights(results["sequential"]) if "sequential" in results else None
        for name, t in times.items():
            speed = f"{base / t:.2f}x" if base else "-"
            same = "-" if ref is None else str(weights(results[name]) == ref)
            print(f"{name:<12}{t:>8.1f}{speed:>10}{same:>14}")


if __name__ == "__main__":
    main()
