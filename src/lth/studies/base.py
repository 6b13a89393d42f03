"""What a study is: a plug-in that runs over a finished run and adds a table to
``lth.load``, figures (and a table) to ``lth report`` and a verb to the ``lth`` command.

A study is one small class: its ``name`` (the verb, the table's name and its directory in a
run), its ``settings`` (a validated :class:`~lth.config_schema.Section` dataclass whose
fields become the verb's flags), and :meth:`Study.over` — what it computes over a finished
run, stored through :class:`lth.store.Analysis` (files, then a summary written last, with
their digests). Every other method has a default that reads those summaries back.

>>> from dataclasses import dataclass
>>> import pandas as pd
>>> @dataclass(frozen=True)
... class CountSettings(Section):
...     level: int = flag(0, "the level whose weights are counted")
>>> class Count(Study):
...     name, settings = "count", CountSettings
...     def over(self, result, settings):
...         kept = sum(result.mask(settings.level).kept().values())
...         self.analysis(result, level=settings.level).commit(
...             {"level": settings.level, "kept": kept})
...         return pd.DataFrame([{"level": settings.level, "kept": kept}])
>>> Count().settings(level=2)
CountSettings(level=2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..config_schema import Section
from ..errors import ConfigError
from ..registry import Registry
from ..store import Analysis, Damaged, RunDir, analyses, study_name_problem

if TYPE_CHECKING:  # pandas too: `lth --help` builds the study verbs without it
    import pandas as pd

    from ..analysis import Results
    from ..experiment import LotteryModel, Result

# One figure of a report: (file stem, caption, draw), drawn lazily; draw is None for a
# note that names what is not drawn.
FigureItem = tuple[str, str, Callable[[], Any] | None]
# Names lth.load's Results already uses for its own tables (and their CSV files).
RESULTS_TABLES = ("runs", "levels", "layers", "curves", "problems", "studies")


def flag(default: Any, help: str, *, metavar: str | None = None) -> Any:
    """A settings field with the help (and metavar) of its command-line flag.

    >>> @dataclasses.dataclass(frozen=True)
    ... class S(Section):
    ...     points: int = flag(11, "points on the path")
    >>> dataclasses.fields(S)[0].metadata["help"]
    'points on the path'
    """
    meta = {"help": help, "metavar": metavar}
    if isinstance(default, list | dict | set):
        raise TypeError("a setting's default must be immutable: use a tuple")
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class NoSettings(Section):
    """The settings of a study that has none."""


class Study:
    """A study over finished runs; subclass it, set ``name`` and ``settings``, write
    :meth:`over` (or :meth:`run`), and register an instance with
    :func:`register_study`."""

    name: ClassVar[str]
    settings: ClassVar[type[Section]]
    help: ClassVar[str] = ""  # one line for `lth --help`
    title: ClassVar[str] = ""  # the report's heading of the study's table
    # The table's columns that the command prints and the report shows (empty: every one).
    columns: ClassVar[tuple[str, ...]] = ()

    # -- running --------------------------------------------------------------------------
    def sweep(self, settings: Any) -> list[tuple[str, ...]]:
        """The experiments the command runs, as config overrides (``key=value``) applied
        to its config file: one experiment by default."""
        return [()]

    def run(self, experiment: LotteryModel, store: str | Path, settings: Any) -> pd.DataFrame:
        """Run (or resume) the experiment's IMP levels, then :meth:`over` its result."""
        return self.over(experiment.run(store=store), settings)

    def over(self, result: Result, settings: Any) -> pd.DataFrame:
        """What the study computes over a finished run, stored through
        :meth:`analysis`; returns its rows."""
        raise NotImplementedError(f"study {self.name!r} defines neither over() nor run()")

    def analysis(self, run: Any, *, level: int | None = None,
                 settings: dict[str, Any] | None = None) -> Analysis:
        """This study's analysis directory in ``run`` (a run directory, a
        :class:`~lth.experiment.Result` or a :class:`~lth.store.RunDir`)."""
        path = getattr(run, "path", run)
        return Analysis.of(RunDir(path), self.name, level=level, settings=settings)

    # -- reading --------------------------------------------------------------------------
    def rows(self, run: RunDir) -> tuple[list[dict[str, Any]], list[str]]:
        """The summaries of the run's finished analyses (without their digests), and a
        problem line for each damaged one."""
        rows, problems = [], []
        for analysis in analyses(run, self.name):
            try:
                summary = analysis.summary()
            except Damaged as exc:
                if analysis.has_summary():  # not merely interrupted
                    problems.append(f"{analysis.path}: the {self.name} analysis is damaged "
                                    f"({exc.problem}); run `lth {self.name}` again to redo it")
                continue
            rows.append({k: v for k, v in summary.items() if k != "files"})
        return rows, problems

    def table(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The study's table in ``lth.load(...).studies[name]``, from its rows (each with
        the run's experiment, seed, run_dir and experiment_id)."""
        return frame

    def shown(self, table: pd.DataFrame) -> pd.DataFrame:
        """The columns of :attr:`columns` that ``table`` has (all, if none is declared)."""
        if not self.columns:
            return table
        return table[[c for c in self.columns if c in table]]

    # -- reporting ------------------------------------------------------------------------
    def figures(self, results: Results) -> list[FigureItem]:
        """The report's figures of one section (``results.studies[self.name]``: its rows,
        never empty here)."""
        return []

    def report_table(self, table: pd.DataFrame) -> pd.DataFrame:
        """The table the report shows under :attr:`title`: experiment, seed, then the
        shown columns."""
        import pandas as pd

        ids = [c for c in ("experiment", "seed") if c in table]
        return pd.concat([table[ids], self.shown(table.drop(columns=ids))], axis=1)


STUDIES: Registry[Study] = Registry("study", workers=False)  # read by the main process only


def register_study(study: Study | type[Study]) -> Any:
    """Register a study (an instance, or a class built without arguments); returns what it
    was given, so it works as a class decorator. Registering a study of the same class
    again (a reloaded module) replaces it.

    >>> @register_study
    ... class Nothing(Study):
    ...     name, settings, help = "nothing", NoSettings, "does nothing"
    >>> "nothing" in STUDIES
    True
    >>> del STUDIES["nothing"]
    """
    obj = study() if isinstance(study, type) else study
    if not isinstance(obj, Study):
        raise ConfigError(f"cannot register {study!r} as a study: subclass lth.studies.Study")
    name = getattr(obj, "name", None)
    problem = study_name_problem(name)
    if problem is None and name in RESULTS_TABLES:
        problem = f"{name!r} is a table of lth.load already; choose another name"
    if problem:
        raise ConfigError(f"study {type(obj).__name__}: {problem}")
    settings = getattr(obj, "settings", None)
    if not (isinstance(settings, type) and issubclass(settings, Section)
            and dataclasses.is_dataclass(settings)):
        raise ConfigError(f"study {name!r}: settings must be a dataclass subclassing "
                          f"lth.config_schema.Section; got {settings!r}")
    if name in STUDIES:  # (the registry tells objects apart by module and name: classes)
        old = STUDIES[name]
        if (type(old).__module__, type(old).__qualname__) != (type(obj).__module__,
                                                              type(obj).__qualname__):
            raise ConfigError(f"study {name!r} is already registered ({type(old).__module__}."
                              f"{type(old).__qualname__}); choose another name, or "
                              f"`del lth.studies.STUDIES[{name!r}]` first")
    STUDIES.register(obj, name=name, replace=True)
    return study
