"""Files that check themselves: atomic writes, and JSON records and tensor files that
carry a SHA-256 digest of their own content, verified on every read.

Reading never needs torch to *verify* a file (``verify_file`` is plain Python), so a
driver process can check a whole store cheaply. Loading tensors never executes code
(safetensors).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ..errors import StoreError

DIGEST = "sha256"  # the key of a file's own digest, in a JSON record or tensor metadata


class Damaged(StoreError):
    """A stored file is missing, truncated, unreadable or not what was written."""

    def __init__(self, path: str | Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path} {problem}")

    def __reduce__(self) -> tuple:  # pickled between processes with both arguments
        return type(self), (self.path, self.problem)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half.

    The file gets the permissions any new file would get (the umask), not mkstemp's 0600,
    so a store shared by a group stays readable to it. The temporary file's name is chosen
    before it exists, so an interrupt (Ctrl-C) at any point after its creation removes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # a failed write names no file: name the one written
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_temporary(path: Path) -> bool:
    """A leftover of :func:`atomic_write_bytes` interrupted before its rename."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest_of(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (key order and spacing do not matter)."""
    return hashlib.sha256(_canonical(obj)).hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise Damaged(path, "is missing") from None
    except IsADirectoryError:
        raise Damaged(path, "is a directory, not a file") from None
    except OSError as exc:
        raise Damaged(path, f"cannot be read ({exc.strerror})") from None


# -- JSON records ---------------------------------------------------------------------------
def write_record(path: str | Path, record: dict[str, Any]) -> str:
    """Write a JSON object with its own digest (key ``sha256``); returns the digest."""
    body = {k: v for k, v in record.items() if k != DIGEST}
    digest = digest_of(body)
    atomic_write_bytes(path, (json.dumps({**body, DIGEST: digest}, indent=2) + "\n").encode())
    return digest


def read_record(path: str | Path) -> dict[str, Any]:
    """A record written by :func:`write_record`, checked; :class:`Damaged` otherwise."""
    path = Path(path)
    raw = _read_bytes(path)
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Damaged(path, f"is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise Damaged(path, f"holds a JSON {type(obj).__name__}, not the record lth wrote")
    digest = obj.pop(DIGEST, None)
    if digest is None:
        raise Damaged(path, "has no digest (edited by hand, or not written by this lth)")
    if digest != digest_of(obj):
        raise Damaged(path, "does not match its digest (changed after it was written)")
    return obj


# -- tensor files ---------------------------------------------------------------------------
def _parse(raw: bytes, path: Path) -> tuple[dict[str, Any], bytes]:
    if len(raw) < 8:
        raise Damaged(path, f"is truncated ({len(raw)} bytes)")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise Damaged(path, "is truncated (header longer than the file)")
    try:
        header = json.loads(raw[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Damaged(path, "has an unreadable header") from None
    if not isinstance(header, dict):
        raise Damaged(path, "has an unreadable header")
    return header, raw[8 + n:]


def _tensor_digest(header: dict[str, Any], data: bytes) -> str:
    h = hashlib.sha256(_canonical(header))
    h.update(data)
    return h.hexdigest()


def verify_tensor_bytes(raw: bytes, path: Path) -> tuple[str, dict[str, Any] | None]:
    """Check a tensor file's own digest; returns ``(digest, meta)``."""
    header, data = _parse(raw, path)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or DIGEST not in meta:
        raise Damaged(path, "has no digest (not written by this lth, or damaged)")
    digest = meta.pop(DIGEST)
    if not meta:
        header.pop("__metadata__")
    if _tensor_digest(header, data) != digest:
        raise Damaged(path, "does not match its digest (changed after it was written)")
    try:
        extra = json.loads(meta["json"]) if "json" in meta else None
    except json.JSONDecodeError:
        raise Damaged(path, "has unreadable metadata") from None
    return digest, extra


def save_tensors(path: str | Path, tensors: dict[str, Any], meta: dict[str, Any] | None = None
                 ) -> str:
    """Save tensors with safetensors and a digest of header and data, atomically; returns
    the digest."""
    from safetensors.torch import save as st_save

    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    metadata = {"json": json.dumps(meta)} if meta is not None else None
    first = st_save(flat, metadata=metadata)
    header, data = _parse(first, Path(path))
    digest = _tensor_digest(header, data)
    atomic_write_bytes(path, st_save(flat, metadata={**(metadata or {}), DIGEST: digest}))
    return digest


def load_tensors(path: str | Path, expect: str | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Load what :func:`save_tensors` wrote, checked: ``(tensors, meta)``. ``expect``: the
    digest a record says the file has (catches a good file put in the wrong place)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    raw = _read_bytes(path)
    digest, meta = verify_tensor_bytes(raw, path)
    if expect is not None and digest != expect:
        raise Damaged(path, "is not the file its level recorded (replaced by another)")
    try:
        return st_load(raw), meta
    except (SafetensorError, ValueError) as exc:
        raise Damaged(path, f"cannot be decoded ({exc})") from None


def verify_file(path: str | Path, expect: str | None = None) -> str:
    """Check one stored file (record or tensors) without loading it; returns its digest."""
    path = Path(path)
    if path.suffix == ".json":
        digest = digest_of(read_record(path))
    else:
        digest = verify_tensor_bytes(_read_bytes(path), path)[0]
    if expect is not None and digest != expect:
        raise Damaged(path, "is not the file its level recorded (replaced by another)")
    return digest
