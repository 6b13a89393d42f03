"""``lth status``: what a store holds — groups' trials and single runs, with progress, and
(``--verify``) every file checked against its digest."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StoreError
from .store import GROUP_KINDS, Damaged, RunDir, Trials, legacy_format, store_entries


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def _run_line(run: RunDir, cfg: dict, verify: bool) -> list[str]:
    n_levels = cfg.get("n_levels")
    done = run.finished_levels()
    in_progress = [lv for lv in run.level_numbers()
                   if lv not in done and run.level(lv).in_progress()]
    finished = n_levels is not None and done == list(range(n_levels + 1))
    state = "finished" if finished else ("interrupted" if in_progress or done else "started")
    lines = [f"{run.name}: {len(done)} levels done, {state}"]
    if verify:
        lines += [f"    damaged {exc.path.relative_to(run.path)}: {exc.problem}"
                  for exc in run.verify()]
    return lines


def _group_lines(d: Path, kind: str, verify: bool) -> list[str]:
    trials = Trials(d)
    entries = trials.read()
    live = trials.running()
    counts = {"done": 0, "failed": 0, "running": 0, "not finished": 0}
    detail = []
    for key, t in entries.items():
        if t.get("status") in ("done", "failed"):
            counts[t["status"]] += 1
            if t["status"] == "failed":
                detail.append(f"    failed  {key}: {t.get('error')}")
        elif key in live and _alive(live[key]):
            counts["running"] += 1
            detail.append(f"    running {key} (pid {live[key]})")
        else:
            counts["not finished"] += 1
    if verify:
        for key, t in entries.items():
            run = trials.run_path(t)
            if run is not None:
                detail += [f"    damaged {key}: {exc.path.relative_to(d)}: {exc.problem}"
                           for exc in RunDir(run).verify()]
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    return [f"{d.name} [{kind}]: {summary}", *detail]


def store_status(store: str | Path, *, verify: bool = False) -> str:
    """One line per run and group of ``store``; ``verify``: also check every file."""
    store = Path(store)
    if not store.is_dir():
        raise StoreError(f"{store} is not a directory; give the --store used for the runs")
    lines: list[str] = []
    for d in store_entries(store):
        if legacy_format(d):
            lines.append(f"{d.name}: made by lth 0.1 (store format 1); `lth migrate {store}` "
                         "upgrades it")
            continue
        try:
            cfg = RunDir(d).config()
        except Damaged as exc:
            lines.append(f"{d.name}: damaged config.json ({exc.problem}); running it again "
                         "(`lth run`) rewrites it")
            continue
        if cfg.get("kind") in GROUP_KINDS:
            lines += _group_lines(d, cfg["kind"], verify)
        else:
            lines += _run_line(RunDir(d), cfg, verify)
    return "\n".join(lines) if lines else f"{store}: no runs"
