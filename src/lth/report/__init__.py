"""Reports: figures (matplotlib, no I/O) and the self-contained HTML report.

``lth.report.figures`` (and ``figures_forward``) load on first use, so ``import lth`` does
not import matplotlib's plotting stack.
"""

import importlib
from typing import Any

from .html import build_report

__all__ = ["build_report", "figures", "figures_forward"]


def __getattr__(name: str) -> Any:
    if name in ("figures", "figures_forward"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
