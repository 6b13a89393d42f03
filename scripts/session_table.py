"""One metric of every variant of a session, level by level, as a Markdown table.

Each cell is the mean ± sd over seeds (n in the header); the first columns give each
level's share of weights (from the first variant). For the at-init and supermask presets:

    .venv/bin/python scripts/session_table.py runs/at_init-session-<id> \\
        --metric early_stop_test_acc --variants imp_one_shot,snip,grasp,synflow,random
"""

from __future__ import annotations

import argparse

import lth
from lth.experiment.stats import describe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("session", help="a session directory (or a store holding one)")
    ap.add_argument("--metric", default="early_stop_test_acc")
    ap.add_argument("--variants", help="comma-separated, in this order (default: all)")
    args = ap.parse_args()

    levels = lth.load(args.session).levels
    names = args.variants.split(",") if args.variants else sorted(levels.experiment.unique())
    n = levels[levels.experiment == names[0]].seed.nunique()
    print("| level | % weights | " + " | ".join(names) + " |")
    print("|---:|---:|" + "---:|" * len(names))
    for level, part in levels.groupby("level"):
        pct = part[part.experiment == names[0]].pct_remaining.mean()
        cells = []
        for name in names:
            d = describe(part[part.experiment == name][args.metric].tolist())
            cells.append(f"{d['mean']:.4f} ± {d['sd']:.4f}" if d["n"] else "-")
        print(f"| {level} | {pct:.1f} | " + " | ".join(cells) + " |")
    print(f"\n{args.metric}, mean ± sd over {n} seeds")


if __name__ == "__main__":
    main()
