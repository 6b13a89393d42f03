"""Verified, resumable, atomic downloads.

A file is fetched into ``<name>.part`` (resumed with an HTTP Range request after a dropped
connection), checked against its SHA-256 (or MD5 where the publisher gives only that),
and only then renamed to its final name: a file under its final name is always complete
and verified.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from ..version import __version__

CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (or restart it); raise if the body is short."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"lth/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is complete
            return
        raise
    with response:
        resumed = have and response.status == 206
        expected = response.headers.get("Content-Length")
        total = (have if resumed else 0) + int(expected) if expected is not None else None
        with open(part, "ab" if resumed else "wb") as f:
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
    size = part.stat().st_size
    if total is not None and size != total:
        raise http.client.IncompleteRead(b"", total - size)


def download(urls: Sequence[str], dest: str | Path, *, sha256: str | None = None,
             md5: str | None = None, attempts: int = 3, timeout: float = 60.0,
             backoff: float = 1.0) -> Path:
    """Download the first of ``urls`` that serves a verified copy to ``dest``.

    Processes downloading the same file take turns (a lock beside it): the second finds
    the first's verified file and returns it.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = open(dest.with_name(dest.name + ".lock"), "a")  # noqa: SIM115
    except OSError as exc:
        raise DataError(f"cannot write to the download cache {dest.parent} ({exc}); set "
                        "$LTH_CACHE to a writable directory, or data.root to where the files "
                        "are") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dest.exists():
            return dest
        return _download_locked(urls, dest, sha256, md5, attempts, timeout, backoff)


def _download_locked(urls: Sequence[str], dest: Path, sha256: str | None, md5: str | None,
                     attempts: int, timeout: float, backoff: float) -> Path:
    part = dest.with_name(dest.name + ".part")
    algorithm, expected = ("sha256", sha256) if sha256 else ("md5", md5)
    errors: list[str] = []
    for url in urls:
        restarted = False
        tries = 0
        while tries < attempts + restarted:
            tries += 1
            resumed = part.exists() and part.stat().st_size > 0
            try:
                _fetch_once(url, part, timeout)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                errors.append(f"{url}: {exc}")
                if isinstance(exc, urllib.error.HTTPError) and exc.code in (403, 404, 410):
                    break  # this mirror does not have it
                time.sleep(backoff * tries)
                continue
            got = file_digest(part, algorithm) if expected else None
            if got == expected:
                os.replace(part, dest)
                return dest
            part.unlink()
            if resumed and not restarted:  # the kept prefix may be what is wrong
                restarted = True
                continue
            errors.append(f"{url}: served a file whose {algorithm} is {got}, expected "
                          f"{expected} (deleted)")
            break  # try the next mirror
    kept = f" ({part.stat().st_size} bytes kept in {part}; re-run to resume)" \
        if part.exists() else ""
    raise DataError(f"could not download a verified {dest.name}{kept}: "
                    f"{'; '.join(errors[-3:]) or 'no source answered'}. Without network "
                    f"access, place a verified copy at {dest} or in a directory given by "
                    "data.root / $LTH_DATA")
