"""The tables of docs/sparse_training.md from a finished configs/session_sparse_training.toml.

Variants named ``<method>_<pct>`` are one final network at ``pct`` % of the weights;
multi-level variants (``imp``, ``imp_late``) give, at each target density, their level
nearest to it; ``<method>_<pct>_<control>`` are the ticket tests of a method's mask. Each
cell is the mean over seeds with the half-width of the t-based 95% CI of the mean, the
share of weights it reached in brackets.

    .venv/bin/python scripts/sparse_training_table.py runs/sparse_training-session-<id>
"""

from __future__ import annotations

import argparse
import re

import pandas as pd

import lth
from lth.experiment.stats import describe

TARGETS = (20, 10, 5, 2)
SINGLE = re.compile(r"^(?P<method>.+?)_(?P<pct>\d+)$")
CONTROL = re.compile(r"^(?P<method>.+?)_(?P<pct>\d+)_(?P<control>same_mask|random_reinit)$")


def cell(values: pd.Series, fmt: str = ".4f") -> str:
    d = describe(values.tolist())
    if not d["n"]:
        return "-"
    half = d["ci_high"] - d["mean"] if d["n"] > 1 else float("nan")
    return f"{d['mean']:{fmt}}" + ("" if half != half else f" ± {half:{fmt}}")


def final_networks(levels: pd.DataFrame) -> dict[tuple[str, int], pd.DataFrame]:
    """(method, target %) -> the rows (one per seed) of its final network there."""
    out: dict[tuple[str, int], pd.DataFrame] = {}
    for name, part in levels.groupby("experiment"):
        if CONTROL.match(name):
            continue
        single = SINGLE.match(name)
        if single and int(single["pct"]) in TARGETS:
            out[(single["method"], int(single["pct"]))] = part[part.level == part.level.max()]
        elif part.level.max() > 1:  # iterative: the level nearest each target
            pct = part.groupby("level").pct_remaining.mean()
            for target in TARGETS:
                level = (pct - target).abs().idxmin()
                out[(name, target)] = part[part.level == level]
        else:
            out[(name, round(part[part.level == 1].pct_remaining.mean()))] = part[
                part.level == 1]
    return out


def table(networks: dict, methods: list[str], metric: str, fmt: str, scale: float = 1.0,
          spread: bool = True) -> list[str]:
    rows = ["| method | " + " | ".join(f"~{t}%" for t in TARGETS) + " |",
            "|---|" + "---:|" * len(TARGETS)]
    for m in methods:
        cells = []
        for t in TARGETS:
            part = networks.get((m, t))
            if part is None:
                cells.append("")
                continue
            pct = part.pct_remaining.mean()
            value = (cell(part[metric] * scale, fmt) if spread
                     else f"{(part[metric] * scale).mean():{fmt}}")
            cells.append(f"{value} ({pct:.1f}%)")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("session", help="the session directory (or a store holding only it)")
    ap.add_argument("--metric", default="final_test_acc")
    args = ap.parse_args()
    levels = lth.load(args.session).levels
    networks = final_networks(levels)
    methods = [m for m in dict.fromkeys(m for m, _ in networks)
               if any((m, t) in networks for t in TARGETS)]
    seeds = levels.seed.nunique()
    print(f"{args.metric}, mean ± 95% CI over {seeds} seeds (share of weights reached)\n")
    print("\n".join(table(networks, methods, args.metric, ".4f")))
    print("\nbudget_steps: training steps the final network depends on\n")
    print("\n".join(table(networks, methods, "budget_steps", ".0f", spread=False)))
    print("\nbudget_flops in GFLOPs: training FLOPs the final network depends on\n")
    print("\n".join(table(networks, methods, "budget_flops", ".4g", 1e-9, spread=False)))
    others = sorted({m for m, t in networks if t not in TARGETS})
    for m in others:
        (t,) = [t for mm, t in networks if mm == m]
        part = networks[(m, t)]
        print(f"\n{m}: {args.metric} {cell(part[args.metric])} at "
              f"{part.pct_remaining.mean():.1f}% of the weights, budget "
              f"{part.budget_steps.mean():.0f} steps")
    controls = {}
    for name, part in levels.groupby("experiment"):
        c = CONTROL.match(name)
        if c:
            controls[(c["method"], int(c["pct"]), c["control"])] = part[part.level == 1]
    if controls:
        print(f"\nticket test of the masks: {args.metric}, the method's own network, its mask "
              "retrained fixed from θ0 (same_mask) and from a random reinitialisation\n")
        print("| mask | % weights | the method | same mask from θ0 | random reinit |")
        print("|---|---:|---:|---:|---:|")
        for (m, t) in sorted({(m, t) for m, t, _ in controls}):
            own = networks[(m, t)]
            print(f"| {m} | {own.pct_remaining.mean():.1f} | {cell(own[args.metric])} | "
                  f"{cell(controls[(m, t, 'same_mask')][args.metric])} | "
                  f"{cell(controls[(m, t, 'random_reinit')][args.metric])} |")


if __name__ == "__main__":
    main()
