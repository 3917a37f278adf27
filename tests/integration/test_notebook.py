"""docs/interpret.ipynb runs top to bottom (nbclient, in a kernel of this very Python) and its HTML
outputs reach for nothing outside themselves."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow
NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "interpret.ipynb"
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xhtml"}


def test_interpret_notebook_executes_and_stays_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # a kernel of the running python, whatever kernels the machine has registered
    spec_dir = tmp_path / "kernels" / "attnlab-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "attnlab test", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="attnlab-test",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    html_outputs = [o["data"]["text/html"] for cell in nb.cells if cell.cell_type == "code"
                    for o in cell.get("outputs", []) if "data" in o and "text/html" in o["data"]]
    assert len(html_outputs) >= 5  # attention, logit lens, head effects, saliency, head finder
    for page in html_outputs:
        page = "".join(page) if isinstance(page, list) else page
        assert "renderView(" in page and "function heatmap(" in page
        urls = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>)]*", page)) - NAMESPACES
        assert not urls, f"external URLs in a notebook output: {sorted(urls)[:5]}"
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
