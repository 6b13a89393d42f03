"""The code of docs/architecture.md runs as written: its Python blocks, in order, in one
namespace, with what they register removed afterwards."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from lth.data import DATASETS
from lth.execution import EXECUTORS
from lth.pruning import CRITERIA, SCHEDULES
from lth.studies import STUDIES
from lth.tasks import TASKS

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: str) -> list[str]:
    return BLOCK.findall((DOCS / page).read_text())


@pytest.fixture
def clean_registries():
    registries = [CRITERIA, SCHEDULES, DATASETS, TASKS, EXECUTORS, STUDIES]
    before = [set(r.names()) for r in registries]
    yield
    for registry, names in zip(registries, before, strict=True):
        for name in set(registry.names()) - names:
            del registry[name]


def test_the_architecture_page_runs_as_written(clean_registries, tmp_path, monkeypatch):
    blocks = python_blocks("architecture.md")
    assert len(blocks) >= 8  # setup, then criterion .. study
    monkeypatch.chdir(tmp_path)
    page = types.ModuleType("docs_architecture")  # a module, as the page's code would be
    monkeypatch.setitem(sys.modules, page.__name__, page)
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/architecture.md block {i}", "exec"), page.__dict__)
