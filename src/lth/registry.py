"""One registry type for everything chosen by name: models, datasets, criteria, reinit
modes, pruning schedules, executors.

Entries lth registers while it is imported are *built in*: every worker process has them,
because it imports lth. Entries registered later are the user's and exist only in the
process that registered them, so executors that start worker processes ship a description
of them (:func:`portable_entries`) and the workers import them again (:func:`restore`).
A function or class travels by module and name; any other entry (an object such as a
:class:`~lth.pruning.network.NetworkCriterion` wrapping a function) travels pickled, the
functions and classes it holds again by module and name. An entry no worker could import
(defined in ``__main__`` or a notebook, a lambda, a local function, or an object holding
one) is refused when such an executor is created, not deep inside a worker.

>>> SHAPES = Registry("shape", workers=False)  # a registry only this process reads
>>> @SHAPES.register
... def square(x): return x * x
>>> SHAPES["square"](3), "square" in SHAPES, SHAPES.names()
(9, True, ('square',))
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import pickle
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from .errors import ConfigError, unknown_name

T = TypeVar("T")

_ALL: dict[str, Registry[Any]] = {}  # kind -> registry, for shipping entries to workers
_REQUIRED = object()


class Registry(Generic[T]):
    """A typed mapping name -> object, filled by :meth:`register`.

    ``workers=True``: worker processes read it too (criteria, models, ...), so its user
    entries are shipped to them; ``False`` for registries only the main process reads
    (executors). ``entry``: turns what is registered into the registry's kind of entry (a
    plain function into a mode object, say), or raises :class:`~lth.errors.ConfigError`
    for what cannot be one.
    """

    def __init__(self, kind: str, *, workers: bool = True,
                 entry: Callable[[Any], T] | None = None) -> None:
        self.kind = kind
        self._entry = entry
        self._entries: dict[str, T] = {}
        self._builtin: dict[str, T] = {}
        if workers:
            if kind in _ALL:  # restore() finds a registry by kind: one per kind
                raise ValueError(f"a registry of kind {kind!r} exists already")
            _ALL[kind] = self

    @overload
    def register(self, obj: T, /, *, name: str | None = None, replace: bool = False) -> T: ...

    @overload
    def register(self, obj: None = None, /, *, name: str | None = None,
                 replace: bool = False) -> Callable[[T], T]: ...

    def register(self, obj: T | None = None, /, *, name: str | None = None,
                 replace: bool = False) -> T | Callable[[T], T]:
        """Add ``obj`` under ``name`` (default: its ``__name__``); returns ``obj``, so it
        works as a decorator, bare or as ``@REG.register(name="x")``.

        A name taken by a different entry is an error unless ``replace=True``; the same
        code defined again (a re-run notebook cell, a reloaded module: a function of the
        same module and name, an object of the same class holding the same settings and
        functions) replaces itself.
        """
        if obj is None:
            return lambda o: self.register(o, name=name, replace=replace)
        key = name if name is not None else getattr(obj, "__name__", None)
        if not isinstance(key, str) or not key:
            raise ConfigError(f"cannot register {obj!r} as a {self.kind}: it has no __name__; "
                              "give one with name='...'")
        entry = obj if self._entry is None else self._entry(obj)
        old = self._entries.get(key, entry)
        if old is not entry and not replace and _code_key(old) != _code_key(entry):
            raise ConfigError(f"{self.kind} {key!r} is already registered ({_describe(old)}); "
                              "choose another name, or pass replace=True to register "
                              f"{_describe(entry)} in its place")
        self._entries[key] = entry
        return obj

    def mark_builtin(self) -> None:
        """Record every entry registered so far as lth's own (called once lth has filled
        the registry at import; later entries are the user's)."""
        self._builtin = dict(self._entries)

    def user_entries(self) -> dict[str, T]:
        """Entries registered after lth's own (including built-in names replaced)."""
        return {n: o for n, o in self._entries.items() if self._builtin.get(n) is not o}

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable "name"
            raise ConfigError(unknown_name(self.kind, name, self._entries)) from None

    def get(self, name: str, *, default: Any = _REQUIRED) -> Any:
        """The entry ``name``; without it, ``default`` if given, else the error that says
        which names exist."""
        if default is not _REQUIRED and name not in self:
            return default
        return self[name]

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self._builtin.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> Iterable[tuple[str, T]]:
        return self._entries.items()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


@dataclass(frozen=True)
class EntryRef:
    """Where a worker finds a user entry again: ``import module; module.qualname``, or, for
    an object that is not a function or class, ``payload``: the object pickled."""

    kind: str
    name: str
    module: str
    qualname: str
    payload: bytes | None = None


def _location(obj: object) -> tuple[str, str] | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return (module, qualname) if isinstance(module, str) and isinstance(qualname, str) else None


def _code_key(obj: object) -> object:
    """What tells two entries apart: a function or class by where it is defined; an
    object by its class and, recursively, its fields; a plain value by itself."""
    if isinstance(obj, (types.FunctionType, type)):
        return ("code", _location(obj))
    if isinstance(obj, (str, int, float, bool, type(None))):
        return obj
    if isinstance(obj, (tuple, list)):
        return tuple(_code_key(v) for v in obj)
    if isinstance(obj, dict):
        return tuple((repr(k), _code_key(v)) for k, v in obj.items())
    if dataclasses.is_dataclass(obj):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    else:
        fields = getattr(obj, "__dict__", None)
    if fields is None:
        return ("object", id(obj))
    return (_location(type(obj)), tuple((k, _code_key(v)) for k, v in sorted(fields.items())))


def instances_of(cls: type, *, wrap: Callable[[Any], Any] | None = None,
                 what: str = "") -> Callable[[Any], Any]:
    """An ``entry`` converter for :class:`Registry`: instances of ``cls`` as they are,
    functions through ``wrap`` (when given), anything else refused with what to give."""

    def convert(obj: Any) -> Any:
        if isinstance(obj, cls):
            return obj
        if wrap is not None and isinstance(obj, types.FunctionType):
            return wrap(obj)
        raise ConfigError(f"cannot register {obj!r}: give an instance of "
                          f"{cls.__module__}.{cls.__qualname__}{what}")

    return convert


def _describe(obj: object) -> str:
    where = _location(obj)
    return f"{where[0]}.{where[1]}" if where else repr(obj)


def _resolve(module: str, qualname: str) -> object:
    target: object = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def _unimportable(obj: object) -> str | None:
    """Why a worker process could not import ``obj`` again, or ``None`` if it can."""
    where = _location(obj)
    if where is None:
        return "it has no module and name; register a function or class instead"
    module, qualname = where
    if module in ("__main__", "__mp_main__"):
        return "it is defined in __main__ (a script run directly, or a notebook)"
    if "<" in qualname:
        return "it is a lambda or a function defined inside another function"
    try:
        mod = importlib.import_module(module)
        found = _resolve(module, qualname)
    except Exception as exc:  # noqa: BLE001 - any import failure means "not importable"
        return f"{module}.{qualname} cannot be imported ({type(exc).__name__}: {exc})"
    if getattr(mod, "__spec__", None) is None:  # built in memory, not found on sys.path
        return f"module {module!r} was not imported from a file"
    if found is not obj:
        return f"{module}.{qualname} is another object"
    return None


class _NotPortable(Exception):
    pass


class _ImportablePickler(pickle.Pickler):
    """Pickles an object, refusing every function and class in it that a worker could not
    import (pickle stores those by module and name)."""

    def reducer_override(self, obj: object) -> object:
        if isinstance(obj, (types.FunctionType, type)):
            problem = _unimportable(obj)
            if problem:
                raise _NotPortable(f"it refers to {_describe(obj)}, and {problem}")
        return NotImplemented


def _portable(kind: str, name: str, obj: object) -> EntryRef | str:
    """``obj``'s reference for workers, or why a worker could not get it."""
    problem = _unimportable(obj)
    if problem is None:
        module, qualname = _location(obj)  # type: ignore[misc]
        return EntryRef(kind, name, module, qualname)
    if isinstance(obj, (types.FunctionType, type)) or _location(obj) is not None:
        return problem
    buffer = io.BytesIO()
    try:
        _ImportablePickler(buffer).dump(obj)
    except _NotPortable as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any pickling failure: not portable
        return f"it cannot be pickled ({type(exc).__name__}: {exc})"
    return EntryRef(kind, name, type(obj).__module__, type(obj).__qualname__,
                    buffer.getvalue())


def portable_entries() -> tuple[EntryRef, ...]:
    """The user entries that worker processes need, as picklable references.

    Raises one :class:`~lth.errors.ConfigError` naming every entry a worker could not
    import.

    >>> portable_entries()
    ()
    """
    refs, problems = [], []
    for registry in _ALL.values():
        for name, obj in registry.user_entries().items():
            ref = _portable(registry.kind, name, obj)
            if isinstance(ref, str):
                problems.append(f"{registry.kind} {name!r}: {ref}")
            else:
                refs.append(ref)
    if problems:
        raise ConfigError(
            "worker processes cannot import " + "; ".join(problems) + ". Workers import lth "
            "and find your entries again by module and name: move them into a module they "
            "can import (e.g. a .py file next to your script or notebook, then `import` it "
            "and register there), or run with executor='sequential'")
    return tuple(refs)


def restore(refs: Iterable[EntryRef], *, path: Iterable[str] = ()) -> None:
    """Import and register ``refs`` in this (worker) process.

    ``path``: directories to append to ``sys.path`` first, for workers that do not inherit
    the main process's path (Ray). Registering an entry again is a no-op.
    """
    sys.path.extend(p for p in path if p not in sys.path)
    refs = list(refs)
    if any(ref.kind not in _ALL for ref in refs):  # `import lth` is lazy: fill every registry
        importlib.import_module("lth.experiment")
    for ref in refs:
        try:
            obj = (_resolve(ref.module, ref.qualname) if ref.payload is None
                   else pickle.loads(ref.payload))
        except Exception as exc:  # noqa: BLE001 - named in the error, with the fix
            raise ConfigError(
                f"a worker process cannot import {ref.kind} {ref.name!r} from "
                f"{ref.module}.{ref.qualname} ({type(exc).__name__}: {exc}); put its module "
                "on the workers' path (PYTHONPATH) or use executor='sequential'") from None
        _ALL[ref.kind].register(obj, name=ref.name, replace=True)


__all__ = ["EntryRef", "Registry", "instances_of", "portable_entries", "restore"]
