"""Exceptions raised for anything a user can cause.

Every message says what was received, what is allowed, and how to fix it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class LTHError(Exception):
    """Base class of every error ``lth`` raises on purpose."""


class ConfigError(LTHError, ValueError):
    """A configuration key or value is wrong."""


class ModelError(LTHError, ValueError):
    """The model cannot be handled (nothing prunable, unknown name, ...)."""


class DataError(LTHError, ValueError):
    """The data is missing, malformed or inconsistent."""


class TrainingError(LTHError):
    """Training went wrong in a way the configuration must fix (e.g. the loss diverged)."""


class StoreError(LTHError):
    """A run directory cannot be used (conflicting config, corrupt file, ...)."""


_SEPARATORS = str.maketrans("", "", "_- .")
_SHOWN = 4  # suggestions named at most; the list of known names follows anyway


def _folded(text: str) -> str:
    """``text`` as compared for suggestions: case and separators ignored (lenet300 finds
    lenet_300_100)."""
    return text.lower().translate(_SEPARATORS)


def suggestions(name: str, known: Iterable[str]) -> list[str]:
    """The known names ``name`` may have meant, best first: the same but for case and
    separators, those it begins (``lenet`` → ``lenet_300_100``), then those it is part of,
    shortest first; failing all three, the closest spelling (``optimiser`` → ``optimizer``).

    >>> suggestions("vgg1", ["vgg11", "vgg16_bn", "mlp", "vgg16"])
    ['vgg11', 'vgg16', 'vgg16_bn']
    >>> suggestions("optimiser", ["optimizer", "lr"])
    ['optimizer']
    """
    name, names = str(name), list(dict.fromkeys(str(k) for k in known))
    key = _folded(name)
    if len(key) >= 2:
        same = [k for k in names if _folded(k) == key]  # Fashion-MNIST: fashion_mnist
        begun = [k for k in names if _folded(k).startswith(key) and k not in same]
        inside = [k for k in names if len(key) >= 3 and key in _folded(k)
                  and k not in same and k not in begun]
        by_length = lambda k: (len(k), k)  # noqa: E731 - the shortest are the likeliest
        found = same + sorted(begun, key=by_length) + sorted(inside, key=by_length)
        if found:
            return found[:_SHOWN]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    # Equally similar names (resnet21 vs resnet20/resnet32): prefer the longest shared prefix.
    return sorted(close, key=lambda k: (-difflib.SequenceMatcher(None, name, k).ratio(),
                                        -len(os.path.commonprefix([name, k]))))[:1]


def did_you_mean(name: str, known: Iterable[str], then: str = "") -> str:
    """``"; did you mean 'x'?"`` (or ``'x' or 'y'``, several names that ``name`` begins),
    or ``""`` when nothing is close; ``then``: the rest of the message, after the question
    or after ``"; "`` when there is none.

    >>> did_you_mean("lenet", ["lenet_300_100", "lenet5", "resnet56"])
    "; did you mean 'lenet5' or 'lenet_300_100'?"
    >>> did_you_mean("optimiser", ["optimizer", "lr"], then="known: optimizer, lr")
    "; did you mean 'optimizer'? known: optimizer, lr"
    """
    found = [f"'{k}'" for k in suggestions(name, known)]
    if not found:
        return f"; {then}" if then else ""
    shown = found[0] if len(found) == 1 else f"{', '.join(found[:-1])} or {found[-1]}"
    return f"; did you mean {shown}?" + (f" {then}" if then else "")


def unknown_name(kind: str, name: object, known: Iterable[str]) -> str:
    """Message for an unknown registry/choice name, listing what exists."""
    known = sorted(known)
    return f"unknown {kind} {name!r}{did_you_mean(str(name), known)} Known: {', '.join(known)}"


class StorageError(StoreError):
    """The filesystem refused a read or write (full, read-only, no permission, a name too
    long, a file where a directory should be). Finished work is kept: run the same command
    again once the cause is gone."""


_AGAIN = ("then run the same command again: finished work is kept (finished levels, and an "
          "interrupted level resumes from its last checkpoint)")


def explain_os_error(exc: OSError) -> StorageError:
    """One message for a failed file operation: what failed, where, and the fix."""
    import errno

    where = exc.filename if exc.filename is not None else "a file"
    parent = os.path.dirname(os.path.abspath(str(where))) if exc.filename else "its directory"
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        msg = (f"no space left on the disk holding {parent} (writing {where}); free some "
               f"space or use another directory (--store), {_AGAIN}")
    elif code == errno.EROFS:
        msg = (f"{where} is on a read-only filesystem; remount it writable or use another "
               f"directory (--store, --out), {_AGAIN}")
    elif code in (errno.EACCES, errno.EPERM):
        msg = (f"no permission to access {where}; give this user access to {parent} or "
               f"use another directory (--store, --out), {_AGAIN}")
    elif code == errno.ENAMETOOLONG:
        name = os.path.basename(str(where))
        msg = (f"the name {name[:48]!r}… ({len(name.encode())} bytes) is longer than the "
               "filesystem allows (usually 255 bytes); use a shorter experiment, variant or "
               "session name")
    elif code == errno.ENOTDIR:
        msg = (f"{where}: part of this path is a file where a directory is needed; give a "
               "directory path (e.g. --store runs)")
    elif code == errno.EEXIST:
        msg = (f"{where} already exists and is a file, where a directory is needed; give a "
               "directory path (e.g. --store runs)")
    elif code == errno.EISDIR:
        msg = f"{where} is a directory where a file is needed; give a file path"
    else:
        msg = f"{where}: {exc.strerror or exc}; {_AGAIN} once it is fixed"
    return StorageError(msg)


def explained_os_errors(fn):  # noqa: ANN001, ANN201 - a decorator keeping fn's signature
    """Make ``fn`` raise :class:`StorageError` (one message, with the fix) for any
    ``OSError`` of the filesystem."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            if not is_filesystem_error(exc):
                raise
            raise explain_os_error(exc) from exc

    return wrapper


def is_filesystem_error(exc: OSError) -> bool:
    """A refused file operation (not a network error, which is an OSError too)."""
    import errno

    return exc.filename is not None or exc.errno in (
        errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
        errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR)
