"""Ticket against control over seeds, level by level, from a finished session.

For every level: the share of weights left, each variant's test accuracy at the early-stop
iteration (mean ± sd and the t-based 95% confidence interval over seeds), the early-stop
iteration, and the paired difference ticket − control (per seed, then mean and 95% CI):
the two share θ0, data order and masks at a seed, so the paired interval is the one that
says whether the ticket wins. Prints a Markdown table.

    .venv/bin/python scripts/ticket_vs_control.py runs/ticket_vs_reinit-session-<id> \\
        --ticket ticket --control random_reinit
"""

from __future__ import annotations

import argparse

import lth
from lth.experiment.stats import describe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("session", help="a session directory (or a store holding one)")
    ap.add_argument("--ticket", default="ticket")
    ap.add_argument("--control", default="random_reinit")
    ap.add_argument("--metric", default="early_stop_test_acc")
    args = ap.parse_args()

    levels = lth.load(args.session).levels
    wide = levels.pivot_table(index=["level", "seed"], columns="experiment",
                              values=[args.metric, "pct_remaining", "early_stop_step"])
    print(f"| level | % weights | {args.ticket} (mean ± sd) | 95% CI | es it | "
          f"{args.control} (mean ± sd) | 95% CI | es it | difference | 95% CI | n |")
    print("|---:|---:|---:|---|---:|---:|---|---:|---:|---|---:|")
    for level, part in wide.groupby(level="level"):
        t, c = part[(args.metric, args.ticket)], part[(args.metric, args.control)]
        pct = part[("pct_remaining", args.ticket)].mean()
        dt, dc, dd = describe(t.tolist()), describe(c.tolist()), describe((t - c).tolist())
        es_t = part[("early_stop_step", args.ticket)].mean()
        es_c = part[("early_stop_step", args.control)].mean()
        print(f"| {level} | {pct:.1f} | {dt['mean']:.4f} ± {dt['sd']:.4f} | "
              f"[{dt['ci_low']:.4f}, {dt['ci_high']:.4f}] | {es_t:.0f} | "
              f"{dc['mean']:.4f} ± {dc['sd']:.4f} | [{dc['ci_low']:.4f}, {dc['ci_high']:.4f}] | "
              f"{es_c:.0f} | {dd['mean']:+.4f} | [{dd['ci_low']:+.4f}, {dd['ci_high']:+.4f}] | "
              f"{dd['n']} |")


if __name__ == "__main__":
    main()
