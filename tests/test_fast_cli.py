"""``lth --help`` and ``lth CMD --help`` build the parser without torch, pandas or
matplotlib; ``import lth`` loads its names on first use, and every exported name resolves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lth

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "matplotlib", "numpy", "sklearn", "numba")
ENV = {**os.environ,
       "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def _imported(*argv: str) -> set[str]:
    """The top-level modules imported by ``python -X importtime -m lth ARGV``."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lth", *argv], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: lth" in done.stdout
    return {line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in done.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["session", "--help"],
                                  ["robust", "--help"], ["forward-sweep", "--help"],
                                  ["instability", "--help"], ["list", "--help"]],
                         ids=lambda a: " ".join(a))
def test_help_imports_no_heavy_library(argv):
    imported = _imported(*argv)
    assert "lth" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_import_lth_is_light_and_loads_names_on_use():
    code = ("import sys, lth; light = 'torch' not in sys.modules; lth.Mask; "
            "print(light, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.split() == ["True", "True"], done.stderr


def test_every_exported_name_resolves_and_is_listed():
    assert sorted(lth.__all__) == sorted([*lth._FROM, *lth._SUBMODULES, "__version__"])
    for name in lth.__all__:
        assert getattr(lth, name) is not None, name
    assert set(lth.__all__) <= set(dir(lth))
    from lth import LotteryModel, report, sparse_ticket  # noqa: F401 - from-imports work
    assert lth.masks.Mask is lth.Mask  # submodules stay attributes, as before
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        lth.nothing_here  # noqa: B018
