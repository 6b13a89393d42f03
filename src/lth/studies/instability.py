"""Instability as a study: ``lth instability CONFIG --rewind-steps 0,500 --levels 0,5``,
``lth.load(...).studies["instability"]`` (also ``.instability``) and the report's figures.
What it computes is :mod:`lth.experiment.instability`; its figures are
:mod:`lth.report.figures_instability`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config_schema import Problem, Section
from ..store import Analysis, RunDir
from .base import FigureItem, Study, flag, register_study

if TYPE_CHECKING:  # pandas too: `lth --help` builds the study verbs without it
    import pandas as pd

    from ..analysis import Results
    from ..experiment import LotteryModel

NAME = "instability"


@dataclass(frozen=True)
class InstabilitySettings(Section):
    """``rewind_steps``: the command runs the config once per k (``reinit.rewind_step``;
    :meth:`Instability.run` analyses the experiment it is given, at its own k);
    ``levels``: the IMP levels analysed; ``points``: evaluated points of each path."""

    rewind_steps: tuple[int, ...] = flag(
        (0,), "rewind steps k (iterations), e.g. 0,100,500,2000", metavar="K,K,...")
    levels: tuple[int, ...] = flag(
        (0,), "IMP levels to analyse, e.g. 0,5 (0: the dense net)", metavar="L,L,...")
    points: int = flag(11, "evaluated points on the path, ends included")

    def problems(self) -> list[Problem]:
        out: list[Problem] = []
        for key in ("rewind_steps", "levels"):
            values = getattr(self, key)
            if not values or min(values) < 0:
                out.append((key, f"got {list(values)}; give one or more numbers >= 0"))
        if self.points < 2:
            out.append(("points", f"got {self.points}; the path needs at least its two ends"))
        return out


@register_study
class Instability(Study):
    """Linear mode connectivity (Frankle et al. 2020): the error barrier between two copies
    trained from θk with different data orders, per level and rewind step k."""

    name = NAME
    settings = InstabilitySettings
    help = ("linear mode connectivity: the error barrier between two copies trained from "
            "θk, for the dense net and tickets")
    title = "Instability (linear mode connectivity)"
    columns = ("rewind_step", "level", "pct_remaining", "copy_0_test_acc", "copy_1_test_acc",
               "test_error_barrier", "train_error_barrier", "test_loss_barrier")

    def sweep(self, settings: InstabilitySettings) -> list[tuple[str, ...]]:
        return [(f"reinit.rewind_step={k}",) for k in settings.rewind_steps]

    def run(self, experiment: LotteryModel, store: str | Path,
            settings: InstabilitySettings) -> pd.DataFrame:
        from ..experiment.instability import instability

        return instability(experiment, store, list(settings.levels), points=settings.points)

    def figures(self, results: Results) -> list[FigureItem]:
        """Barrier vs k per experiment name (the runs of one name differ in k), and the
        path of the sparsest analysed level at the smallest k."""
        import pandas as pd

        from ..report import figures as f
        from ..report.sections import slug

        table = results.studies[NAME]
        items: list[FigureItem] = []
        names = results.runs.set_index("run_dir").get("name", pd.Series(dtype=str))
        table = table.assign(base=[str(names.get(d, "")) for d in table.run_dir])
        for base, part in table.groupby("base"):
            items.append((f"instability_{slug(base)}", f"Instability vs rewind step ({base})",
                          lambda p=part: f.instability_vs_rewind(p)))
            first = part.sort_values(["rewind_step", "pct_remaining"]).iloc[0]
            items.append((f"instability_path_{slug(base)}", f"Error along the linear path "
                          f"between two copies ({base}, k = {first.rewind_step}, level "
                          f"{first.level})",
                          lambda r=first: f.instability_path(r.run_dir, int(r.level))))
        return items


def stored_path(run_dir: str | Path, level: int) -> list[dict[str, Any]]:
    """The linear path (one row per point: ``alpha``, the splits' losses and metrics) of a
    level's finished analysis; :class:`~lth.store.Damaged` if there is none or its files
    changed. ``stored_path(run, 1)[0]["alpha"] == 0.0``."""
    analysis = Analysis.of(RunDir(run_dir), NAME, level=level)
    analysis.summary()  # finished, every file intact
    return analysis.record("path")["rows"]
