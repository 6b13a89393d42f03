"""``lth run CONFIG.toml [--set key=value ...] [--store DIR]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..console import write
from ..errors import ConfigError, LTHError, StoreError, explain_os_error, is_filesystem_error
from ..version import __version__
from .studies import add_study_commands, write_csv

if TYPE_CHECKING:  # torch, pandas and the rest load in the commands: `lth --help` is quick
    import pandas as pd


def _table(df: pd.DataFrame) -> str:
    import pandas as pd

    from ..experiment.result import shown_columns, shown_costs

    shown = shown_columns(df.columns)
    metric = [name for c, name in shown.items() if c not in ("pct_remaining", "early_stop_step")]
    cols = {"level": "level", **shown}
    if "earlybird_step" in df and df["earlybird_step"].notna().any():
        cols.update({"train_steps": "steps trained", "earlybird_step": "drawn at",
                     "steps_to_mask": "steps to find mask"})
    cols.update(shown_costs(df))
    view = df[list(cols)].rename(columns=cols)
    return view.to_string(index=False, na_rep="-", formatters={
        "% weights": "{:.1f}".format, **dict.fromkeys(metric, "{:.4f}".format),
        "mask turnover": "{:.3f}".format, "budget FLOPs": "{:.3g}".format,
        "drawn at": lambda v: "-" if pd.isna(v) else f"{v:.0f}"})


def _run_config(path: str, overrides: list[str]):
    """An experiment TOML, or a run directory made from one (resumes or repairs it)."""
    from ..config import ExperimentConfig, load_config
    from ..config_text import parse_override, set_dotted
    from ..store import Damaged, RunDir

    run = RunDir(path)
    if not run.path.is_dir() and (run.path.exists() or run.kept_config() is None):
        return load_config(path, overrides)
    try:
        stored = run.config().get("experiment")
    except Damaged as exc:
        if not run.restore_config():
            raise StoreError(f"{path} is not a run directory lth can resume ({exc.problem});"
                             " run its config file instead") from None
        logging.getLogger("lth").warning("%s; restored from the copy kept by the runs that "
                                         "reuse its masks", exc)
        stored = run.config().get("experiment")
    if not isinstance(stored, dict):
        raise StoreError(f"{path} was made from Python, not a config file; re-run the "
                         "script that made it to resume or repair it")
    for text in overrides:
        set_dotted(stored, *parse_override(text))
    return ExperimentConfig.from_dict(stored)


def _cmd_run(args: argparse.Namespace) -> int:
    from ..experiment import LotteryModel
    from ..experiment.progress import Console

    overrides = list(args.set)
    if args.masks_from:
        overrides.append(f"masks_from={json.dumps(args.masks_from)}")
    cfg = _run_config(args.config, overrides)
    store = args.store if args.store is not None else (
        str(Path(args.config).parent) if Path(args.config).is_dir() else "runs")
    exp = LotteryModel.from_config(cfg)
    from ..store import RunDir
    from ..tracking import MLflow, TensorBoard

    trackers = ([TensorBoard(args.tensorboard)] if args.tensorboard else []) + (
        [MLflow(args.mlflow, args.mlflow_experiment)] if args.mlflow else [])
    result = exp.run(store=store, progress=Console(bars=not args.quiet), trackers=trackers)
    print(f"run directory: {result.path}")
    print(_table(result.table()))
    print(f"per-level table: {RunDir(result.path).levels_csv}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..experiment import Result, compare
    from ..experiment.result import compare_text
    from ..store import RunDir

    for path in args.runs:
        if not RunDir(path).has_config():
            raise StoreError(f"{path} is not a run directory (no config.json)")
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        raise ConfigError(f"--labels has {len(labels)} names for {len(args.runs)} runs")
    try:
        table = compare([Result(p) for p in args.runs], labels)
    except ValueError as exc:
        raise ConfigError(f"--labels: {exc}") from None
    print(compare_text(table))
    write_csv(table, args.csv)
    return 0


def _group_table(result) -> str:
    import pandas as pd

    stats = result.stats()
    if stats.empty:
        return "(no finished trials)"
    def cell(m: pd.DataFrame, metric: str, fmt: str) -> str:
        r = m.loc[metric]
        sd = "" if r["n"] < 2 else f" ± {r['sd']:{fmt}}"
        return f"{r['mean']:{fmt}}{sd}"

    from ..experiment.result import scores_of

    scores = scores_of(stats["metric"].unique())
    rows = []
    for (exp, level), part in stats.groupby(["experiment", "level"], sort=False):
        m = part.set_index("metric")
        row = {"experiment": exp, "level": level,
               "% weights": f"{m.loc['pct_remaining', 'mean']:.1f}",
               "n": int(m.loc["early_stop_step", "n"])}
        for score in scores:
            row[f"{score} @ early stop"] = cell(m, f"early_stop_test_{score}", ".4f")
            row[f"final test {score}"] = cell(m, f"final_test_{score}", ".4f")
        rows.append({**row, "early-stop it": cell(m, "early_stop_step", ".0f")})
    return pd.DataFrame(rows).to_string(index=False)


def _run_group(group, args: argparse.Namespace) -> int:
    from ..experiment.progress import GroupConsole

    result = group.run(store=args.store, executor=args.executor, workers=args.workers,
                       retry_failed=args.retry_failed,
                       progress=GroupConsole(bars=not args.quiet), stack=args.stack)
    print(f"{group.kind} directory: {result.path}")
    print(_group_table(result))
    print(f"trials: {result.summary_line()}; tables: {result.path}/stats.csv, table.csv")
    from ..store import Trials

    failed = result.trials().query("status == 'failed'")
    for _, row in failed.iterrows():
        print(f"failed: {row['key']}: {row['error']} (traceback in "
              f"{Trials(result.path).failure(row['key'])}; --retry-failed re-runs it)")
    return 1 if len(failed) else 0


def _cmd_session(args: argparse.Namespace) -> int:
    from ..experiment import LotterySession, parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds else None
    return _run_group(LotterySession.from_config(args.config, args.set, seeds), args)


def _cmd_robust(args: argparse.Namespace) -> int:
    from ..experiment import LotteryRobust, parse_seeds

    return _run_group(LotteryRobust.from_config(args.config, args.set,
                                                parse_seeds(args.seeds)), args)


def _cmd_status(args: argparse.Namespace) -> int:
    from ..status import store_status

    print(store_status(args.store, verify=args.verify))
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from ..experiment.migrate import migrate

    for line in migrate(args.store):
        print(line)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ..experiment import Result
    from ..store import RunDir

    if not RunDir(args.run).has_config():
        raise StoreError(f"{args.run} is not a run directory (no config.json); give the "
                         "directory `lth run` printed")
    result = Result(args.run)
    if not result.levels:
        raise StoreError(f"{args.run} has no finished level to export; run it first")
    if args.level is not None and args.level not in result.levels:
        raise ConfigError(f"--level {args.level} is not a finished level of {args.run}; "
                          f"finished: {result.levels}")
    ticket = result.export(args.level, args.format)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "state_dict":
        from safetensors.torch import save

        from ..store import atomic_write_bytes  # the umask's permissions, not 0600

        atomic_write_bytes(out, save({k: v.contiguous() for k, v in ticket.items()}))
        how = "safetensors.torch.load_file(...), then model.load_state_dict(...)"
    elif args.format == "sparse":
        from ..export import model_metadata
        from ..sparse_ticket import save

        save(ticket, out, metadata=model_metadata(result.model_spec()))
        how = "lth.load_ticket(...), or sparse_ticket.load(..., model) with only torch"
    else:
        import torch

        torch.save(ticket, out)
        how = "torch.load(..., weights_only=False)"
    level = args.level if args.level is not None else result.levels[-1]
    print(f"level {level} of {result.path.name} as {args.format}: {out} (load with {how})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..report import build_report

    index = build_report(args.path, args.out, title=args.title)
    print(f"report: {index}")
    return 0


def _group_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the base experiment (repeatable)")
    p.add_argument("--store", default="runs", help="directory of runs (default: runs)")
    p.add_argument("--executor", default="local",  # checked by name when it runs
                   help="where trials run: local processes (default), ray (RAY_ADDRESS or a "
                        "local Ray), or sequential in this process")
    p.add_argument("--workers", type=int, help="parallel trials (default: CPU count)")
    p.add_argument("--stack", type=int, metavar="K",
                   help="train up to K alike trials stacked in one step per worker "
                        "(default: train.stack; 0 there means 8 on a GPU, 1 on CPU)")
    p.add_argument("--retry-failed", action="store_true", help="re-run trials that failed")
    p.add_argument("--quiet", action="store_true", help="no progress bar (or lines); what "
                   "is skipped and resumed is still said")


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record comes (not when created), above
    any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        write(f"lth: {record.getMessage()}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as the CLI shows them: one line above any progress bar."""
    write(warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n"),
          file=file)


def _log_to_stderr() -> None:
    """Repairs and notes of the library (logger ``lth``) and warnings go to stderr, one
    line each."""
    logger = logging.getLogger("lth")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
        logger.setLevel(logging.INFO)
    warnings.showwarning = _show_warning


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lth", description="Lottery Ticket Hypothesis "
                                     "experiments: iterative magnitude pruning on PyTorch.")
    parser.add_argument("--version", action="version", version=f"lth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) one IMP experiment from a TOML config")
    run.add_argument("config", help="experiment TOML file, e.g. configs/quickstart.toml, or "
                     "a run directory made from one (resumes or repairs it)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting, e.g. --set train.lr=0.001 (repeatable)")
    run.add_argument("--store", help="directory holding run directories (default: runs; "
                     "for a run directory, the store it is in)")
    run.add_argument("--masks-from", metavar="RUN_DIR", help="use the masks of this finished "
                     "run instead of pruning (e.g. the random-reinit control of a ticket)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--tensorboard", metavar="LOGDIR", help="also log levels to TensorBoard")
    run.add_argument("--mlflow", metavar="URI", help="also log to MLflow, e.g. "
                     "sqlite:///mlflow.db")
    run.add_argument("--mlflow-experiment", default="lth", help="MLflow experiment name")
    run.set_defaults(func=_cmd_run)
    cmp = sub.add_parser("compare", help="per-level table of several runs side by side")
    cmp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    cmp.add_argument("--labels", help="comma-separated column labels, one per run")
    cmp.add_argument("--csv", help="also write the table to this CSV file")
    cmp.set_defaults(func=_cmd_compare)
    ses = sub.add_parser("session", help="variants of an experiment from the same initial "
                         "weights (criteria, reinit modes, controls), optionally over seeds")
    ses.add_argument("config", help="session TOML: [base], [variants.NAME], [grid]")
    ses.add_argument("--seeds", help="e.g. 0-4 or 0,3,7 (default: the file's seeds)")
    _group_args(ses)
    ses.set_defaults(func=_cmd_session)
    rob = sub.add_parser("robust", help="one experiment repeated over seeds, with statistics")
    rob.add_argument("config", help="experiment TOML, as for `lth run`")
    rob.add_argument("--seeds", required=True, help="e.g. 0-4 or 0,3,7")
    _group_args(rob)
    rob.set_defaults(func=_cmd_robust)
    st = sub.add_parser("status", help="what is finished, running and failed in a store")
    st.add_argument("store", nargs="?", default="runs", help="store directory (default: runs)")
    st.add_argument("--verify", action="store_true", help="check every stored file against "
                    "its digest and list the damaged ones")
    st.set_defaults(func=_cmd_status)
    mig = sub.add_parser("migrate", help="upgrade the runs of an older lth (store format 1) "
                         "in place, so they resume instead of training again")
    mig.add_argument("store", nargs="?", default="runs", help="store directory (default: runs)")
    mig.set_defaults(func=_cmd_migrate)
    exp = sub.add_parser("export", help="a level's ticket for plain PyTorch: weights, a "
                         "torch.nn.utils.prune module, a smaller module (unit pruning) or "
                         "a sparse ticket (compressed weights, sparse kernels)")
    exp.add_argument("run", metavar="RUN_DIR", help="a run directory")
    exp.add_argument("--level", type=int, help="level to export (default: the last finished)")
    exp.add_argument("--format", default="state_dict",
                     help="state_dict or sparse (.safetensors), pruned or small "
                     "(torch.save)")
    exp.add_argument("--out", required=True, help="file to write")
    exp.set_defaults(func=_cmd_export)
    rep = sub.add_parser("report", help="HTML report with figures, tables and configs")
    rep.add_argument("path", help="a run, session/robust or store directory")
    rep.add_argument("--out", required=True, help="directory for index.html, PNG/SVG, CSV")
    rep.add_argument("--title", help="page title")
    rep.set_defaults(func=_cmd_report)
    from .forward import add_parser as add_forward_sweep
    from .listing import add_parser as add_list

    add_forward_sweep(sub)  # lth forward-sweep CONFIG [--out DIR] [--set key=value]
    add_list(sub)  # lth list [models|datasets|criteria|reinit|tasks|presets]
    add_study_commands(sub)  # last, so no study takes a command's name: lth instability ...
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _log_to_stderr()
    try:
        return args.func(args)
    except LTHError as exc:
        write(f"lth: error: {exc}")
        return 2
    except BrokenPipeError:  # `lth list models | head`: the reader left; nothing to say
        sys.stdout = open(os.devnull, "w")  # the exit's flush stays quiet
        return 141
    except OSError as exc:
        if not is_filesystem_error(exc):
            raise
        write(f"lth: error: {explain_os_error(exc)}")
        return 2
    except KeyboardInterrupt:
        write("lth: interrupted; re-run the same command to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
