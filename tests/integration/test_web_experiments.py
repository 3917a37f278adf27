"""The walkthrough's experiments page: your runs found where `attnlab experiment` writes them, the
reference runs shipped inside the package otherwise, and a file route that cannot leave a run folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from attnlab.experiments import EXPERIMENTS
from attnlab.experiments.common import default_out, finish, new_figure, save_figure
from attnlab.web.app import create_app

LOCAL = "http://127.0.0.1"  # the default testserver host is refused (DNS-rebinding guard)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reference_only(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """A server whose runs folder is empty: only the shipped reference results."""
    return TestClient(create_app(experiments_dir=tmp_path_factory.mktemp("no-runs")), base_url=LOCAL)


def _write_run(name: str, out: Path | None = None) -> Path:
    """A result folder written by the experiments' own writers, at the CLI's default place unless told."""
    out = out if out is not None else default_out(name)
    fig, axes = new_figure()
    axes[0][0].plot([1, 2, 3], [3, 1, 2])
    figure = save_figure(fig, out, "mine.png")
    finish(name, "my own run", "tiny", 0, time.perf_counter(), out, data={}, summary=["my summary line"], figures=[figure])
    return out


def test_every_experiment_has_an_explanation_and_reference_plots(reference_only: TestClient) -> None:
    body = reference_only.get("/api/experiments").json()
    assert [e["name"] for e in body["experiments"]] == list(EXPERIMENTS)
    assert "no runs of yours" in body["note"]
    for e in body["experiments"]:
        assert "Claim" in e["intro_html"] and "attnlab experiment " + e["name"] in e["intro_html"]
        assert len(e["results"]) == 1
        ref = e["results"][0]
        assert ref["source"] == "reference" and ref["id"] == f"reference/{e['name']}"
        assert ref["command"].startswith(f"attnlab experiment {e['name']}") and ref["summary"]
        assert ref["figures"]
        for f in ref["figures"]:
            assert f["caption_html"].strip(), f"{e['name']}: no explanation for {f['file']}"
            r = reference_only.get(f["url"])
            assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:8] == PNG
        data = reference_only.get(ref["results_url"]).json()
        assert data["experiment"] == e["name"]


def test_your_runs_come_first_where_the_cli_writes_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATTNLAB_EXPERIMENTS_DIR", raising=False)
    _write_run("positions")  # runs/experiments/positions, as `attnlab experiment positions` from here
    _write_run("scaling", Path("runs/experiments/quick/scaling"))  # grouped one level deeper with --out
    client = TestClient(create_app(), base_url=LOCAL)  # no folder given: the server looks where the CLI writes
    body = client.get("/api/experiments").json()
    assert body["runs_dir"] == "runs/experiments"  # relative to the server's folder: no absolute path for the page
    assert "2 runs of yours" in body["note"]
    by = {e["name"]: e for e in body["experiments"]}
    for name, run_id in (("positions", "runs/positions"), ("scaling", "runs/quick/scaling")):
        first, ref = by[name]["results"]
        assert first["id"] == run_id and first["summary"] == ["my summary line"] and ref["source"] == "reference"
        assert [f["file"] for f in first["figures"]] == ["mine.png"]
        assert client.get(first["figures"][0]["url"]).content[:8] == PNG
    assert len(by["context-cost"]["results"]) == 1  # nothing of yours: the reference alone


def test_environment_variable_points_the_server_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_run("heads-form", tmp_path / "elsewhere" / "heads-form")
    monkeypatch.setenv("ATTNLAB_EXPERIMENTS_DIR", str(tmp_path / "elsewhere"))
    body = TestClient(create_app(), base_url=LOCAL).get("/api/experiments").json()
    heads = next(e for e in body["experiments"] if e["name"] == "heads-form")
    assert heads["results"][0]["id"] == "runs/heads-form"


@pytest.mark.parametrize("path", [
    "/api/experiments/reference/context-cost/roles.png",  # a file of another run
    "/api/experiments/reference/context-cost/..%2Fheads-form%2Froles.png",
    "/api/experiments/reference/%2e%2e/context-cost/context_cost.png",
    "/api/experiments/reference/..%2F..%2F..%2Fweb/app.py",
    "/api/experiments/reference/%2Fetc/passwd",
    "/api/experiments/elsewhere/context-cost/context_cost.png",
    "/api/experiments/runs/context-cost/context_cost.png",  # no runs of yours in this server's folder
    "/api/experiments/reference/context-cost/",
    "/api/experiments/reference/nope/results.json",
])
def test_file_route_cannot_leave_a_run_folder(reference_only: TestClient, path: str) -> None:
    r = reference_only.get(path)
    assert r.status_code == 404, path
    assert not r.content.startswith(PNG) and "import" not in r.text and "root:" not in r.text


def test_a_results_file_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    out = _write_run("positions", tmp_path / "positions")
    (tmp_path / "secret.png").write_bytes(PNG + b"secret")
    record = json.loads((out / "results.json").read_text())
    record["figures"] = ["mine.png", "../secret.png"]
    (out / "results.json").write_text(json.dumps(record))
    client = TestClient(create_app(experiments_dir=tmp_path), base_url=LOCAL)
    mine = next(e for e in client.get("/api/experiments").json()["experiments"] if e["name"] == "positions")["results"][0]
    assert [f["file"] for f in mine["figures"]] == ["mine.png"]
    assert client.get("/api/experiments/runs/positions/secret.png").status_code == 404


def test_openapi_lists_the_new_routes(reference_only: TestClient) -> None:
    paths = reference_only.get("/openapi.json").json()["paths"]
    for route in ("/api/experiments", "/api/translate", "/api/models/{name}/load"):
        assert route in paths, route
