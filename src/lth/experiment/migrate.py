"""``lth migrate STORE``: upgrade runs and groups written by lth 0.1 (store format 1) in
place, so that this lth resumes them instead of training them again.

Each run gets its specification and new directory name, and every file is rewritten with
its digest (the bytes of the tensors do not change). A run that reused another run's
masks is matched to that run by the masks' content. What cannot be upgraded (lth 0.1 did
not record ``masks_from_mode`` for runs made from Python) is left as it was and named.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import EarlyBirdConfig, PruneConfig, ReinitConfig, TrainConfig
from ..errors import StoreError
from ..store import FORMAT, GROUP_KINDS, RunDir, Trials, legacy_format, short_hash
from ..store import legacy as old_store
from .result import levels_frame
from .spec import experiment_id, level0_key, recipe, run_id, settings_of, spec

SECTIONS = {"train": TrainConfig, "prune": PruneConfig, "reinit": ReinitConfig,
            "earlybird": EarlyBirdConfig}


class Migration:
    """Upgrades the legacy runs of one store (a store root, or a group's ``trials/``)."""

    def __init__(self, store: Path, modes: dict[str, str] | None = None):
        self.store, self.modes = store, modes or {}
        self.notes: list[str] = []
        self.new_ids: dict[str, dict[str, str]] = {}  # level_001 mask sha -> source ids
        self.migrated: dict[Path, Path] = {}

    def run_all(self) -> None:
        legacy = [d for d in sorted(self.store.iterdir()) if legacy_format(d)]
        runs = [d for d in legacy if old_store.read_config(d).get("identity", {}).get(
            "kind") not in GROUP_KINDS]
        # Sources before the runs that reuse their masks (matched by the masks' bytes).
        ordered = sorted(runs, key=lambda d: "masks_from" in old_store.read_config(d)[
            "identity"])
        old_masks = {d: old_store.mask_digests(d) for d in ordered}
        for d in ordered:
            try:
                new = self.run(d, old_masks)
            except (KeyError, TypeError, ValueError, OSError) as exc:
                self.notes.append(f"{d.name}: not upgraded ({type(exc).__name__}: {exc}); "
                                  "run it again with this lth")
                continue
            if new is not None:
                self.migrated[d] = new
        for d in legacy:
            if d not in runs:
                self.group(d)

    def run(self, d: Path, old_masks: dict[Path, dict[str, str]]) -> Path | None:
        cfg = old_store.read_config(d)
        old = cfg.pop("identity")
        s = old["settings"]
        experiment = cfg.get("experiment") or {}
        mode = experiment.get("masks_from_mode") or self.modes.get(cfg.get("name", ""))
        source = None
        if "masks_from" in old:
            if mode is None:
                self.notes.append(f"{d.name}: reused another run's masks, but lth 0.1 did not "
                                  "record masks_from_mode; run it again with this lth")
                return None
            wanted = old["masks_from"].get("1")
            source = next((self.new_ids[sha] for sha in [wanted] if sha in self.new_ids), None)
            if source is None:
                self.notes.append(f"{d.name}: the run whose masks it reused is not in "
                                  f"{self.store}; run it again with this lth")
                return None
        config = {"seed": s["seed"], "n_levels": s["n_levels"], "masks_from_mode": mode or "same",
                  **{k: {**cls().to_dict(), **s.get(k, {})} for k, cls in SECTIONS.items()}}
        config = json.loads(json.dumps(config))
        m = old["model"]
        new_spec = spec(recipe(settings_of(config), old["initializer"], m["class"],
                               m["structure_sha256"], old["data"]),
                        seed=s["seed"], theta0_sha256=m["theta0_sha256"], masks_from=source)
        rewind = int(cfg.get("rewind_step", 0))
        searches0 = bool(config["earlybird"]["enabled"]) and s["n_levels"] >= 1
        target = self.store / f"{cfg.get('name', d.name.rsplit('-', 1)[0])}-{run_id(new_spec)}"
        if target.exists():
            self.notes.append(f"{d.name}: {target.name} already exists; left as it was")
            return None
        RunDir(d).write_levels_csv(levels_frame(old_store.rewrite_files(d)).to_csv(index=False))
        RunDir(d).write_config({
            "format": FORMAT, "identity": new_spec, "run_id": run_id(new_spec), **cfg,
            "experiment_id": experiment_id(new_spec),
            "level0_key": level0_key(new_spec, rewind, searches0), "n_levels": s["n_levels"]})
        d.rename(target)
        sha1 = old_masks[d].get("level_001")
        if sha1:
            self.new_ids[sha1] = {"run_id": run_id(new_spec),
                                  "experiment_id": experiment_id(new_spec)}
        self.notes.append(f"{d.name} -> {target.name}")
        return target

    def group(self, gdir: Path) -> None:
        cfg = old_store.read_config(gdir)
        old = cfg.pop("identity")
        variants = old.get("variants", {})

        def mode(v: dict) -> str | None:
            for part in ("settings", "config"):
                if isinstance(v.get(part), dict) and "masks_from_mode" in v[part]:
                    return v[part]["masks_from_mode"]
            return None

        inner = Migration(Trials(gdir).runs_dir, {name: m for name, v in variants.items()
                                            if (m := mode(v)) is not None})
        inner.run_all()
        self.notes += [f"{gdir.name}/{Trials(gdir).runs_dir.name}/{n}" for n in inner.notes]
        runs = {}
        for d in Trials(gdir).runs_dir.iterdir():
            try:
                rc = RunDir(d).config()
            except StoreError:
                continue
            runs[rc["name"], rc["identity"]["seed"]] = (d, rc["identity"])
        new_variants = {}
        for name, v in variants.items():
            found = next((ident for (n, _), (_, ident) in runs.items() if n == name), None)
            if found is None:
                self.notes.append(f"{gdir.name}: variant {name!r} has no upgraded run; "
                                  "run the group again with this lth")
                return
            rec = {k: x for k, x in found.items() if k not in ("seed", "theta0_sha256",
                                                               "masks_from")}
            new_variants[name] = {"experiment": short_hash(rec), "masks_of": v.get("masks_of")}
        identity = {"kind": old["kind"], "variants": new_variants}
        entries = {}
        for key, entry in old_store.read_trials(gdir).items():
            found = runs.get((entry.get("variant"), entry.get("seed")))
            entry = {k: x for k, x in entry.items() if k != "run_dir"}
            if found is not None and entry.get("status") == "done":
                entry["run_dir"] = str(found[0].relative_to(gdir))
            elif entry.get("status") == "done":
                entry["status"] = "pending"
            entries[key] = entry
        Trials(gdir).write(entries)
        gid = short_hash(identity)
        RunDir(gdir).write_config({"format": FORMAT, "identity": identity, "run_id": gid,
                                   **cfg})
        target = self.store / f"{cfg.get('name', 'group')}-{old['kind']}-{gid}"
        if target.exists():
            self.notes.append(f"{gdir.name}: {target.name} already exists; left as it was")
            return
        gdir.rename(target)
        self.notes.append(f"{gdir.name} -> {target.name}")


def migrate(store: str | Path) -> list[str]:
    """Upgrade every lth 0.1 run and group of ``store`` in place; returns what was done."""
    store = Path(store)
    if not store.is_dir():
        raise StoreError(f"{store} is not a directory; give the --store of the runs")
    m = Migration(store)
    m.run_all()
    return m.notes or [f"{store}: nothing to upgrade"]
