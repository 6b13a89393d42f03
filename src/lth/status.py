"""``lth status``: what a store holds — groups' trials and single runs, with progress, and
(``--verify``) every file checked against its digest."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StoreError, explained_os_errors
from .store import GROUP_KINDS, Damaged, RunDir, Trials, legacy_format, store_entries


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def command_hint(kind: str) -> str:
    """How a damaged file of a run or group of ``kind`` gets rewritten."""
    return f"the command that made it (`lth {kind} FILE`) repairs it"


def _damage_line(exc: Damaged, base: Path, prefix: str = "", fix: str = "") -> str:
    return f"    damaged {prefix}{exc.path.relative_to(base)}: {exc.problem}{fix}"


def _run_lines(run: RunDir, apart: str | None = None) -> list[str]:
    try:
        n_levels = run.config().get("n_levels")
    except Damaged:
        n_levels = None
    done = run.finished_levels()
    in_progress = [lv for lv in run.level_numbers()
                   if lv not in done and run.level(lv).in_progress()]
    finished = n_levels is not None and done == list(range(n_levels + 1))
    state = "finished" if finished else ("interrupted" if in_progress or done else "started")
    what = f" ({apart})" if apart else ""
    return [f"{run.name}{what}: {len(done)} levels done, {state}"]


def _group_lines(d: Path, kind: str, verify: bool, checked: list[Path]) -> list[str]:
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
        problem = trials.problem()
        if problem is not None:
            detail.append(_damage_line(problem, d, fix=f"; {command_hint(kind)}"))
        elif trials.path.is_file():
            checked.append(trials.path)
        recorded = {}
        for key, t in entries.items():
            run = trials.run_path(t)
            if run is not None:
                recorded[run.resolve()] = key
                if t.get("status") == "done" and not run.is_dir():
                    detail.append(f"    damaged {key}: {run.relative_to(d)}: is missing")
        for run in store_entries(d / "trials") if (d / "trials").is_dir() else []:
            key = recorded.get(run.resolve())
            detail += [_damage_line(exc, d, f"{key}: " if key else "")
                       for exc in RunDir(run).verify(checked=checked)]
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    return [f"{d.name} [{kind}]: {summary}", *detail]


@explained_os_errors
def store_status(store: str | Path, *, verify: bool = False) -> str:
    """One line per run and group of ``store``; ``verify``: also check every file."""
    store = Path(store)
    if not store.is_dir():
        raise StoreError(f"{store} is not a directory; give the store the runs were written to "
                         "(their --store, 'runs' by default)")
    lines: list[str] = []
    checked: list[Path] = []  # files found intact by --verify
    damaged = 0
    entries = [d for d in store_entries(store) if not legacy_format(d)]
    apart = _what_differs([RunDir(d) for d in entries])
    for d in store_entries(store):
        if legacy_format(d):
            lines.append(f"{d.name}: made by lth 0.1 (store format 1); `lth migrate {store}` "
                         "upgrades it")
            continue
        run = RunDir(d)
        kind = run.kind()
        config = run.config_problem()
        if kind in GROUP_KINDS:
            if verify and config is None:  # its config, read against its digest
                checked.append(run.path)
            block = _group_lines(d, kind, verify, checked)
            problems = [config] if config else []
        else:
            block = _run_lines(run, apart.get(d))
            problems = run.verify(checked=checked) if verify else [config] if config else []
        block[1:1] = [_damage_line(exc, d, fix=f"; {command_hint(kind)}"
                                   if config and exc.path == config.path else "")
                      for exc in problems]
        damaged += sum(line.startswith("    damaged ") for line in block)
        lines += block
    if not lines:
        return f"{store}: no runs"
    if verify:
        lines.append(f"{len(checked)} files verified, " + (
            f"{damaged} damaged (listed above)" if damaged else "no damage"))
    return "\n".join(lines)


def _what_differs(runs: list[RunDir]) -> dict[Path, str]:
    """Run directory -> what sets it apart from the other runs of its name in the store
    (its label without the name, :mod:`lth.labels`), for names of two or more runs."""
    from .labels import SEP, run_labels

    configs = {}
    for run in runs:
        try:
            cfg = run.config()
        except Damaged:
            continue
        if cfg.get("kind", "run") not in GROUP_KINDS:
            configs[run.path] = cfg
    names = [c.get("name") for c in configs.values()]
    labels = run_labels(list(configs.values()), [p.name for p in configs])
    return {path: label.removeprefix(f"{cfg.get('name')}{SEP}")
            for (path, cfg), label in zip(configs.items(), labels, strict=True)
            if names.count(cfg.get("name")) > 1 and label.startswith(f"{cfg.get('name')}{SEP}")}
