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
    """Path of every file of ``source``, downloading the missing ones into the cache."""
    if root is not None and not Path(root).is_dir():
        raise DataError(f"data.root = {str(root)!r} is not a directory; fix the path or leave "
                        "it out to use $LTH_DATA, system locations and the download cache")
    dirs = search_dirs(source, root)
    found: dict[str, Path] = {}
    for f in source.files:
        hit = next((d / n for d in dirs for n in (f.name, *f.alternatives)
                    if (d / n).exists()), None)
        if hit is None and download_missing:
            urls = [m.rstrip("/") + "/" + f.name for m in (mirrors or source.mirrors)]
            hit = download(urls, cache_dir() / source.key / f.name, sha256=f.sha256, md5=f.md5)
        if hit is None:
            looked = ", ".join(str(d) for d in dirs)
            raise DataError(f"{source.key}: {f.name} not found (looked in {looked}) and "
                            "downloads are off; set data.download = true or put the file in "
                            "one of those directories")
        found[f.name] = hit
    return found
