"""The example notebook runs, top to bottom, in a real Jupyter kernel: the documented API cannot rot."""
import time

import pytest

from tests.conftest import ROOT

NOTEBOOK = ROOT / "examples" / "initlab_tour.ipynb"


def test_the_tour_notebook_runs_in_a_kernel(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")
    pytest.importorskip("ipykernel", reason="the test extra installs ipykernel")
    monkeypatch.chdir(tmp_path)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    elapsed = time.perf_counter() - t
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "the run's figures, its loss curve and the sweep figure show inline"
    text = "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "Run(" in text and "Sweep(" in text and "completed" in text
    # About 12 s on an idle 2-core machine (kernel start-up included); the bound only catches a runaway.
    assert elapsed < 120, f"the tour took {elapsed:.0f} s"
