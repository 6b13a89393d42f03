"""The run store: self-checking files (:mod:`.files`), the layout (:mod:`.layout`) of runs
(:mod:`.run`), levels (:mod:`.level`), groups (:mod:`.group`) and the studies' analyses
(:mod:`.analysis`). Nothing outside this package knows a file name or format."""

from .analysis import Analysis, analyses, study_name_problem
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
from .group import Trials, group_dir, tidy_group
from .layout import FORMAT, GROUP_KINDS, exclusive, legacy_format, short_hash
from .level import Level, LevelCheckpoint
from .run import RunDir, count_finished_levels, is_run_or_group, store_entries

__all__ = ["FORMAT", "GROUP_KINDS", "Analysis", "Damaged", "Level", "LevelCheckpoint",
           "RunDir", "Trials", "analyses", "atomic_write_bytes", "count_finished_levels",
           "digest_of", "exclusive", "group_dir", "is_run_or_group", "legacy_format",
           "load_tensors", "read_record", "save_tensors", "short_hash", "store_entries",
           "study_name_problem", "tidy_group", "verify_file", "write_record"]
