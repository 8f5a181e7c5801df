"""docs/quickstart.ipynb runs top to bottom, its cells free of TensorFlow's log lines.

The real notebook is executed with nbclient in a Jupyter kernel on this interpreter (a kernelspec
written for the test, so a `python3` kernelspec elsewhere cannot pick another Python), with the
notebook's quick settings (SG2ADA_NOTEBOOK_QUICK=1: 8x8 images, a few dozen training images shown).
Offline and with an empty cache, so the FID cell takes its documented skip path.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

import pytest
from test_console import TF_LOG_LINE

from sg2ada.console import TF_IMPORT_NOISE

nbclient = pytest.importorskip("nbclient", reason="nbclient comes with the test extras")
nbformat = pytest.importorskip("nbformat", reason="nbformat comes with the test extras")
pytest.importorskip("ipykernel", reason="ipykernel comes with the test extras")

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "quickstart.ipynb"


def _kernelspec(jupyter_dir: Path) -> str:
    """A `python3` kernelspec for this interpreter in a Jupyter data folder of the test's own."""
    spec = jupyter_dir / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python",
    }))
    return "python3"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about 80 s of CPU, but two training sessions trace their graphs on a busy machine
def test_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    kernel = _kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("SG2ADA_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("SG2ADA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SG2ADA_INCEPTION", raising=False)
    monkeypatch.delenv("SG2ADA_QUICKSTART_DIR", raising=False)
    work = tmp_path / "nb"
    work.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata.kernelspec.name == kernel
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=540, allow_errors=False,
                                     resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError naming the cell on the first error

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert all(c.execution_count for c in code), "a code cell did not run"
    pngs = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    # augmentation preview, training's fakes, generated images, interpolation strip, copy1k picture
    assert len(pngs) >= 5, [c.source[:60] for c in pngs]
    assert any("image/gif" in o.get("data", {}) for c in code for o in c.outputs), "no interpolation GIF"

    runs = glob.glob(str(work / "quickstart" / "runs" / "00000-*"))
    assert len(runs) == 1, runs
    run = Path(runs[0])
    assert (run / "training_options.json").is_file() and (run / "report.html").is_file()
    # Every training session ended with a grid of fakes, and the second one continued the first run.
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["Progress/kimg"]["mean"] >= 0.04 - 1e-9, stats[-1]["Progress/kimg"]
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    # None of TensorFlow's own logging in the cells: no start-up banner, no C++ error or warning line.
    lines = [ln for c in code for o in c.outputs for ln in o.get("text", "").splitlines()]
    tf_lines = [ln for ln in lines if TF_LOG_LINE.match(ln) or ln.endswith(TF_IMPORT_NOISE)]
    assert not tf_lines, tf_lines
    assert "session 2/2" in text and "copy1k_full" in text and "FID skipped" in text, text[-2000:]
