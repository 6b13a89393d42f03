"""The tutorial notebook: committed without outputs, and it runs end to end (in its quick
setting, ``LTH_TUTORIAL_QUICK=1``) in a temporary directory, writing its figures, report
and exported ticket there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors import safe_open

import lth
from lth.data.sources import locate
from lth.data.vision import SOURCES
from lth.errors import DataError

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "tutorial.ipynb"


def test_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "the tutorial has no code cells"
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"cells {dirty} of {NOTEBOOK.name} hold outputs or execution counts; "
                       "clear them before committing (Jupyter: Edit > Clear All Outputs)")


def _fashion_mnist_present() -> bool:
    try:
        locate(SOURCES["fashion_mnist"], download_missing=False)
    except DataError:
        return False
    return True


def test_tutorial_runs_quick(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if not _fashion_mnist_present():
        pytest.skip("Fashion-MNIST is not installed (Debian: apt-get install "
                    "dataset-fashion-mnist); the tutorial would download it")
    # The kernel inherits the environment: the quick setting, one thread, and this lth.
    src = str(Path(lth.__file__).resolve().parents[1])
    monkeypatch.setenv("LTH_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [src, os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    out = tmp_path / "tutorial_out"
    for name in ("accuracy_vs_weights.png", "early_stop_vs_weights.png",
                 "report/index.html", "ticket_state_dict.safetensors",
                 "ticket_sparse.safetensors"):
        assert (out / name).stat().st_size > 0, name
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if "image/png" in o.get("data", {})]
    assert len(shown) == 2  # the two Figure 3 panels are displayed, not only saved
    # The run is a real session: ticket and control, every level, in the temporary store.
    levels = lth.load(out / "runs").levels
    assert sorted(levels.experiment.unique()) == ["random_reinit", "ticket"]
    assert sorted(levels.level.unique()) == [0, 1, 2, 3]
    with safe_open(str(out / "ticket_sparse.safetensors"), framework="pt") as f:
        assert any(k.endswith(".indices") for k in f.keys())  # pruned weights compressed
