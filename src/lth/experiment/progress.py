"""The progress bar of one experiment: steps over all levels."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, int], None]  # (level, step, end_step)


def progress_bar(progress: bool | Progress, n_levels: int, total: int, rewind: int
                  ) -> Progress | None:
    if callable(progress):
        return progress
    if not progress:
        return None
    from tqdm.auto import tqdm

    per_level = [total] + [total - rewind] * n_levels
    bar = tqdm(total=sum(per_level), unit="it", dynamic_ncols=True)
    done: dict[int, int] = {}

    def report(level: int, step: int, end: int) -> None:
        begin = 0 if level == 0 else rewind
        prev = done.get(level, begin)
        bar.set_description(f"level {level}/{n_levels}")
        bar.update(max(0, step - prev))
        done[level] = step

    report.close = bar.close  # type: ignore[attr-defined]
    return report
