"""``lth status``: what a store holds — groups' trials and single runs, with progress."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StoreError
from .store import read_json


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_line(run: Path) -> str:
    cfg = read_json(run / "config.json")
    total = cfg.get("identity", {}).get("settings", {}).get("n_levels", 0)
    done = len(list(run.glob("level_*/summary.json")))
    ckpt = list(run.glob("level_*/checkpoint.safetensors"))
    state = "finished" if done >= total + 1 else ("interrupted" if ckpt or done else "started")
    return f"{run.name}: {done} levels done, {state}"


def store_status(store: str | Path) -> str:
    store = Path(store)
    if not store.is_dir():
        raise StoreError(f"{store} is not a directory; give the --store used for the runs")
    lines: list[str] = []
    for d in sorted(p for p in store.iterdir() if (p / "config.json").exists()):
        cfg = read_json(d / "config.json")
        if cfg.get("identity", {}).get("kind") in ("session", "robust"):
            trials = read_json(d / "trials.json") if (d / "trials.json").exists() else {}
            live = {p.stem: int(p.read_text() or 0) for p in (d / "running").glob("*.pid")}
            counts = {"done": 0, "failed": 0, "running": 0, "not finished": 0}
            detail = []
            for key, t in trials.items():
                if t["status"] in ("done", "failed"):
                    counts[t["status"]] += 1
                    if t["status"] == "failed":
                        detail.append(f"    failed  {key}: {t.get('error')}")
                elif key in live and _alive(live[key]):
                    counts["running"] += 1
                    detail.append(f"    running {key} (pid {live[key]})")
                else:
                    counts["not finished"] += 1
            summary = ", ".join(f"{v} {k}" for k, v in counts.items())
            lines.append(f"{d.name} [{cfg['identity']['kind']}]: {summary}")
            lines += detail
        else:
            lines.append(_run_line(d))
    return "\n".join(lines) if lines else f"{store}: no runs"
