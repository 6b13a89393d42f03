"""Where dataset files come from, in order: an explicit directory (``data.root``),
``$LTH_DATA``, known system locations, then a cache directory (``$LTH_CACHE``, else
``$XDG_CACHE_HOME/lth`` or ``~/.cache/lth``) filled by verified downloads.
In each directory the files may sit in a subfolder named after the dataset (looked at
first) or directly in it — where a folder holds several datasets, use the subfolders:
files found locally are parsed strictly but not checksummed (Debian's copies, for one,
are recompressed), while downloaded files are always verified.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .download import download


@dataclass(frozen=True)
class RemoteFile:
    name: str
    sha256: str | None = None
    md5: str | None = None
    alternatives: tuple[str, ...] = ()  # local names also accepted (e.g. un-gzipped IDX)


@dataclass(frozen=True)
class Source:
    key: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()


def cache_dir() -> Path:
    if os.environ.get("LTH_CACHE"):
        return Path(os.environ["LTH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lth"


def search_dirs(source: Source, root: str | Path | None) -> list[Path]:
    bases = [Path(root)] if root is not None else []
    if os.environ.get("LTH_DATA"):
        bases.append(Path(os.environ["LTH_DATA"]))
    bases += [Path(d) for d in source.system_dirs]
    bases.append(cache_dir())
    dirs = []
    for base in bases:  # a dataset's own subfolder first: a shared folder may hold others
        dirs += [base / source.key, base]
    return dirs


def locate(source: Source, root: str | Path | None = None, *, download_missing: bool = True,
           mirrors: Sequence[str] | None = None) -> dict[str, Path]:
    """Path of every file of ``source``, all from one place: the first directory holding
    any of them must hold all (a partial copy is an error, never completed from another
    place), except the download cache, whose missing files are downloaded."""
    if root is not None and not Path(root).is_dir():
        raise DataError(f"data.root = {str(root)!r} is not a directory; fix the path or leave "
                        "it out to use $LTH_DATA, system locations and the download cache")
    dirs = search_dirs(source, root)
    cache = cache_dir()
    for d in dirs:
        if d in (cache, cache / source.key):
            break
        found = _files_in(source, d)
        if found and len(found) < len(source.files):
            missing = [f.name for f in source.files if f.name not in found]
            raise DataError(f"{d} holds {len(found)} of the {len(source.files)} {source.key} "
                            f"files but not {', '.join(missing)}: a partial copy; complete it "
                            "or remove it (files are never mixed from different places)")
        if found:
            return found
    found = {**_files_in(source, cache), **_files_in(source, cache / source.key)}
    for f in source.files:
        if f.name in found:
            continue
        if not download_missing:
            looked = ", ".join(str(d) for d in dirs)
            raise DataError(f"{source.key}: {f.name} not found (looked in {looked}) and "
                            "downloads are off; set data.download = true or put the file in "
                            "one of those directories")
        urls = [m.rstrip("/") + "/" + f.name for m in (mirrors or source.mirrors)]
        found[f.name] = download(urls, cache / source.key / f.name, sha256=f.sha256,
                                 md5=f.md5)
    return {f.name: found[f.name] for f in source.files}


def _files_in(source: Source, d: Path) -> dict[str, Path]:
    """The files of ``source`` in directory ``d`` (under their names or alternatives)."""
    found = {}
    for f in source.files:
        hit = next((d / n for n in (f.name, *f.alternatives) if (d / n).is_file()), None)
        if hit is not None:
            found[f.name] = hit
    return found
