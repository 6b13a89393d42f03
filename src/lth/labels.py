"""Experiment labels, and the one resolver of ``experiment=`` arguments.

An experiment is labelled by its name alone when no other experiment in view has that
name; otherwise by its name and what sets it apart, shortest first:
``quickstart · rate=0.5``, ``quickstart · earlybird=on``, ``quickstart · mask_updates=set``.
What sets an experiment apart are the settings that vary among the experiments of its name
where it does not keep the default (the one that keeps every default names its values of
the varying settings: ``quickstart · rate=0.2``). A setting at its default in all of them,
and a section switched off in all of them (``earlybird``, ``mask_updates``), add nothing;
the id (``quickstart · 61a0e9``) is added only where nothing else tells two apart.

``experiment=`` (figures, tables, reports) takes a label, a name, an ``experiment_id`` or
a unique prefix of one: :func:`pick_experiments`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from .config import ExperimentConfig
from .errors import ConfigError, did_you_mean

SEP = " · "
MAX_SHOWN = 4  # settings in one label; more are named by count ("+2 more")
SWITCHES = {"earlybird": "enabled", "mask_updates": "method"}
"""Sections that are off while their switch keeps its default: their other keys change
nothing then, so they never tell experiments apart."""
NOT_APPLICABLE = ("n_levels",)  # left out of an identity where it changes nothing
_ABSENT = object()


def _flat(settings: dict[str, Any]) -> dict[str, Any]:
    """``{"prune": {"rate": 0.2}}`` as ``{"prune.rate": 0.2}``: sections and their keys
    (a key's dict value, such as ``layer_rates``, is one value)."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if isinstance(v, dict):
            out.update({f"{k}.{key}": value for key, value in v.items()})
        else:
            out[k] = v
    return out


def _defaults() -> dict[str, Any]:
    out = _flat(ExperimentConfig().to_dict())
    for key in ("name", "seed", "masks_from", "n_levels"):
        out.pop(key)
    return {k: v for k, v in out.items() if not k.startswith(("model.", "data."))}


DEFAULTS = _defaults()


def described(config: dict[str, Any]) -> dict[str, Any]:
    """A run's experiment (its ``config.json``) as ``key: value`` pairs that labels compare:
    every setting, those its identity leaves out at their default filled in, the keys of
    a switched-off section dropped; then model, data, initializer and masks source."""
    identity = config.get("identity") or {}
    settings = _flat(identity.get("settings") or {})
    out = {**{k: v for k, v in DEFAULTS.items() if k not in settings}, **settings}
    for section, switch in SWITCHES.items():
        if out.get(f"{section}.{switch}") == DEFAULTS[f"{section}.{switch}"]:
            out = {k: v for k, v in out.items()
                   if not k.startswith(f"{section}.") or k == f"{section}.{switch}"}
    model = identity.get("model") or {}
    out["model"] = config.get("model") or model.get("class")
    out["model structure"] = str(model.get("structure_sha256"))[:8]
    out["data"] = (config.get("data") or {}).get("name")
    out["data content"] = str(identity.get("data"))[:8]
    out["initializer"] = identity.get("initializer")
    source = identity.get("masks_from")
    out["masks_from"] = source and source.get("experiment_id", "")[:6]
    out["lth"] = identity.get("lth")
    return out


def _shown_key(key: str, keys: Iterable[str]) -> str:
    """``prune.rate`` as ``rate``, unless another section has a ``rate``; a switch as its
    section (``earlybird``)."""
    section, _, rest = key.partition(".")
    if SWITCHES.get(section) == rest:
        return section
    if not rest or section not in {k.partition(".")[0] for k in DEFAULTS}:
        return key
    same = [k for k in keys if k.partition(".")[2] == rest]
    return rest if len(same) < 2 else key


def _shown_value(key: str, value: Any) -> str:
    section, _, rest = key.partition(".")
    if SWITCHES.get(section) == rest and isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _differences(described_: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """experiment_id -> ``key=value`` of what sets it apart (shortest first)."""
    keys = sorted({k for d in described_.values() for k in d} - set(NOT_APPLICABLE))
    varying = [k for k in keys
               if len({repr(d[k]) for d in described_.values() if k in d}) > 1]
    everything = set(DEFAULTS) | set(keys)
    out = {}
    for eid, d in described_.items():
        own = [k for k in varying if k in d and d[k] != DEFAULTS.get(k, _ABSENT)]
        shown = own or [k for k in varying if k in d]  # the one at the defaults names them
        texts = [f"{_shown_key(k, everything)}={_shown_value(k, d[k])}" for k in shown]
        out[eid] = sorted(texts, key=lambda t: (len(t), t))
    return out


def _joined(name: str, texts: Sequence[str], most: int | None) -> str:
    if not texts:
        return name
    cut = list(texts if most is None else texts[:most])
    more = f", +{len(texts) - len(cut)} more" if len(cut) < len(texts) else ""
    return f"{name}{SEP}{', '.join(cut)}{more}"


def experiment_labels(experiments: Iterable[tuple[str, str, dict[str, Any]]]
                      ) -> dict[tuple[str, str], str]:
    """(name, experiment_id) -> label, for ``(name, experiment_id, config)`` of the
    experiments in view (the config of any one of its runs).

    >>> base = {"identity": {"settings": {"prune": {"rate": 0.2}}}}
    >>> other = {"identity": {"settings": {"prune": {"rate": 0.5}}}}
    >>> sorted(experiment_labels([("a", "1", base), ("a", "2", other), ("b", "3", base)]
    ...                          ).values())
    ['a · rate=0.2', 'a · rate=0.5', 'b']
    """
    by_name: dict[str, dict[str, dict[str, Any]]] = {}
    for name, eid, config in experiments:
        by_name.setdefault(name, {}).setdefault(eid, described(config))
    labels: dict[tuple[str, str], str] = {}
    for name, group in by_name.items():
        texts = _differences(group) if len(group) > 1 else dict.fromkeys(group, [])
        short = {eid: _joined(name, t, MAX_SHOWN) for eid, t in texts.items()}
        repeated = [eid for eid in short if list(short.values()).count(short[eid]) > 1]
        for eid in repeated:  # a cut label that equals another shows it all
            short[eid] = _joined(name, texts[eid], None)
        labels.update({(name, eid): label for eid, label in short.items()})
    counts = pd.Series(list(labels.values())).value_counts()
    return {key: f"{label}{SEP}{key[1][:6]}" if counts[label] > 1 else label
            for key, label in labels.items()}


def run_labels(configs: Sequence[dict[str, Any]], fallback: Sequence[str]) -> list[str]:
    """One label per run (its ``config.json``): its experiment's label among the others
    in view, then ``seed=N`` where runs of one experiment repeat; ``fallback`` (e.g. the
    directory names) where even that repeats (the same run twice)."""
    keys = [(c.get("name", f), c.get("experiment_id") or f) for c, f in zip(
        configs, fallback, strict=True)]
    labels = experiment_labels((*key, c) for key, c in zip(keys, configs, strict=True))
    out = [labels[key] for key in keys]
    if len(set(keys)) < len(keys):
        seeds = [(c.get("identity") or {}).get("seed") for c in configs]
        out = [f"{lab}{SEP}seed={s}" if keys.count(key) > 1 else lab
               for lab, key, s in zip(out, keys, seeds, strict=True)]
    return [lab if out.count(lab) == 1 else f for lab, f in zip(out, fallback, strict=True)]


def _ids_of(frame: pd.DataFrame) -> dict[str, list[str]]:
    """label -> its experiment ids (none for tables without the column)."""
    if "experiment_id" not in frame:
        return {str(lab): [] for lab in pd.unique(frame["experiment"])}
    pairs = frame[["experiment", "experiment_id"]].drop_duplicates()
    out: dict[str, list[str]] = {str(lab): [] for lab in pd.unique(frame["experiment"])}
    for lab, eid in pairs.itertuples(index=False):
        if isinstance(eid, str):
            out[str(lab)].append(eid)
    return out


def _said_to_differ(label: str) -> set[str]:
    """What a label says differs, each part whole and its value alone:
    ``"a · criterion=movement"`` -> {"criterion=movement", "movement"}."""
    parts = label.split(SEP)[1:]
    return {*parts, *(part.split("=", 1)[1] for part in parts if "=" in part)}


def _resolve(wanted: Any, labels: dict[str, list[str]], present: dict[str, Any]) -> Any:
    text = str(wanted)
    if text in present:
        return present[text]
    by_name = [lab for lab in labels if lab.startswith(f"{text}{SEP}")]
    by_id = [lab for lab, ids in labels.items() if any(i.startswith(text) for i in ids)] \
        if text else []
    by_part = [lab for lab in labels if text in _said_to_differ(lab)] if text else []
    found = by_name or by_id or by_part
    if len(found) == 1:
        return present[found[0]]
    if found:
        what = "name" if by_name else "id prefix" if by_id else "difference"
        listed = "; ".join(f"{lab!r} ({', '.join(i[:12] for i in labels[lab]) or 'no id'})"
                           for lab in found)
        raise ConfigError(f"experiment {text!r} is ambiguous: the {what} of {len(found)} "
                          f"experiments: {listed}; give one of these labels, or a prefix of its id")
    known = [f"{lab!r}" + (f" ({', '.join(i[:12] for i in ids)})" if ids else "")
             for lab, ids in labels.items()]
    raise ConfigError(f"unknown experiment {text!r}{did_you_mean(text, labels)} Known "
                      f"(label, experiment_id): {'; '.join(known)}; give a label, a name, "
                      "what a label says differs, or an experiment_id or a unique prefix "
                      "of one")


def pick_experiments(frame: pd.DataFrame, wanted: Any = None) -> list:
    """The experiment labels of ``frame`` (a table of :func:`lth.load`) that ``wanted``
    asks for: None (all, in order of appearance), or one or a list of labels, names,
    ``experiment_id``\\ s or unique prefixes of them, or what a label says differs
    (``"criterion=movement"`` or ``"movement"``). Ambiguous or unknown input raises
    :class:`~lth.errors.ConfigError` listing the candidates.

    >>> t = pd.DataFrame({"experiment": ["a · rate=0.5", "a · rate=0.2", "b"],
    ...                   "experiment_id": ["ea6bf603d16d", "1b2c3d4e5f60", "77aa00bb11cc"]})
    >>> pick_experiments(t, ["ea6b", "b"])
    ['a · rate=0.5', 'b']
    """
    present = {str(v): v for v in pd.unique(frame["experiment"])}
    if wanted is None:
        return list(present.values())
    many = not isinstance(wanted, str) and isinstance(wanted, Iterable)
    labels = _ids_of(frame)
    return [_resolve(w, labels, present) for w in (wanted if many else [wanted])]
