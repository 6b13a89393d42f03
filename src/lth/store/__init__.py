"""The run store: self-checking files (:mod:`.files`) and the layout of runs, levels and
groups (:mod:`.layout`). Nothing outside this package knows a file name or format."""

from .files import (
    Damaged,
    atomic_write_bytes,
    digest_of,
    load_tensors,
    read_record,
    save_tensors,
    verify_file,
    write_record,
)
from .layout import (
    FORMAT,
    GROUP_KINDS,
    Level,
    LevelCheckpoint,
    RunDir,
    Trials,
    count_finished_levels,
    exclusive,
    group_dir,
    legacy_format,
    short_hash,
    store_entries,
)

__all__ = ["FORMAT", "GROUP_KINDS", "Damaged", "Level", "LevelCheckpoint", "RunDir", "Trials",
           "atomic_write_bytes", "count_finished_levels", "digest_of", "exclusive",
           "group_dir", "legacy_format", "load_tensors", "read_record", "save_tensors",
           "short_hash", "store_entries", "verify_file", "write_record"]
