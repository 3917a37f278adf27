"""``attnlab site`` and the in-browser models: written by default, left out (one line) when onnxruntime-web is missing.

Exports only the character model (``--only``): a few seconds of recording, one small graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnlab import catalog as cat
from attnlab.cli import main
from attnlab.site import onnx as site_onnx
from attnlab.site.export import SITE_FILE

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

MODEL = "shakespeare-char"


@pytest.fixture(autouse=True)
def _installed() -> None:
    if not any(i.name == MODEL and i.available for i in cat.catalog()):
        pytest.skip(f"model {MODEL} is not installed")


def test_without_onnxruntime_web_the_site_is_written_without_live_models_and_says_so_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "site"
    (out / "models" / MODEL).mkdir(parents=True)  # an earlier export's in-browser model: site.json will not name it
    (out / "models" / MODEL / "model.onnx").write_bytes(b"old")
    monkeypatch.setenv("ATTNLAB_ORT_DIST", str(tmp_path / "no-runtime"))
    assert main(["site", str(out), "--only", MODEL]) == 0
    said = capsys.readouterr().out.splitlines()
    note = [line for line in said if line.startswith("no in-browser models: ")]
    assert len(note) == 1 and "onnxruntime-web is not installed" in note[0] and "make install" in note[0]
    assert not any(line.startswith("in the browser") for line in said)
    site = json.loads((out / SITE_FILE).read_text(encoding="utf-8"))
    assert site["live"] is False and site["live_models"] == {} and site["models"] == [MODEL]
    assert not (out / "models").exists() and not (out / "vendor").exists()
    assert "GET /api/tour" in site["answers"]


def test_with_onnxruntime_web_the_site_runs_the_model_in_the_browser(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    try:
        site_onnx.runtime_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "site"
    assert main(["site", str(out), "--only", MODEL]) == 0
    said = capsys.readouterr().out
    site = json.loads((out / SITE_FILE).read_text(encoding="utf-8"))
    # int8: the export checked the graph's weights and probabilities against the app's answers (INT8_BOUND)
    assert site["live"] is True and site["live_models"] == {MODEL: "int8"}
    manifest = json.loads((out / "models" / MODEL / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["precision"] == "int8" and manifest["model"] == MODEL
    for name in site_onnx.RUNTIME_FILES:
        assert (out / "vendor" / "onnxruntime-web" / name).is_file()
    assert f"in the browser (type your own sentence): {MODEL} (int8), with onnxruntime-web: " in said
    # The tour's steps on models this site does not hold are not recorded (the page says they need the server).
    assert "POST /api/models/minilm/load {}" not in site["answers"]
