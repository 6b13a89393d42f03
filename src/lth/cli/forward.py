"""``lth forward-sweep CONFIG [--out DIR] [--set key=value ...]``: greedy forward selection
on snapshots of one dense training run (:mod:`lth.forward`, imported when it runs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register ``lth forward-sweep`` on the CLI's subparsers."""
    p = sub.add_parser("forward-sweep", help="greedy forward selection (Ye et al. 2020) on "
                       "snapshots of one dense training run (Wolfe et al.)")
    p.add_argument("config", help="sweep TOML, e.g. configs/forward_digits.toml")
    p.add_argument("--out", help="output directory (default: runs/forward/NAME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set selection.tol=0.1 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_forward_sweep)


def _cmd_forward_sweep(args: argparse.Namespace) -> int:
    from ..forward import load_forward_config, run_forward_sweep, sweep_table_text

    cfg = load_forward_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / "forward" / cfg.name
    table = run_forward_sweep(cfg, out, progress=None if args.quiet else print)
    print(sweep_table_text(table))
    print(f"outputs: {out}/sweep.csv, sweep.png, sweep.svg")
    return 0
