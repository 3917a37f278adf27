"""The experiments page: each built-in experiment's plots, numbers and explanation.

Results come from two places, both read with ``attnlab.experiments.list_results``:

- **your runs**: ``attnlab experiment NAME`` writes ``runs/experiments/NAME/`` under the directory it
  is started from, so the server looks in ``runs/experiments`` under *its* working directory (or the
  folder given to ``create_app(experiments_dir=...)`` / the ``ATTNLAB_EXPERIMENTS_DIR`` variable).
  Folders one level deeper (``runs/experiments/quick/NAME``) are found too, for runs grouped with
  ``--out``.
- **reference runs** shipped inside the package (``attnlab/experiments/reference/``): the runs that
  ``docs/experiments.md`` describes, shown when you have run nothing.

The page is shown run folders relative to their root (``runs/quick/scaling``) and the runs folder
relative to the server's working folder (``shown_path``), never an absolute path. A results.json of
the wrong shape (a list, ``{"summary": 5}``) is skipped or read with empty fields, and one that
``read_results`` refuses (a FIFO, too large, nested too deep, a lone surrogate, a 400-digit number) is
skipped and named in the answer's ``skipped`` list: the page never fails and never waits on a file.

Files are served only by looking names up in that index (source, run folder, file name), never by
joining a requested path, so no request can reach outside a result folder.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from attnlab.experiments import EXPERIMENTS, ResultsFileError, list_results, read_results
from attnlab.experiments.common import RESULTS_FILE
from attnlab.web import schemas as s
from attnlab.web.content import CONTENT_DIR, render
from attnlab.web.errors import NotFoundError
from attnlab.web.view import Mount

ENV_DIR = "ATTNLAB_EXPERIMENTS_DIR"
EXPLANATIONS_DIR = CONTENT_DIR / "experiments"
_FIGURE = re.compile(r"^##\s+Figure\s+`([\w.-]+\.png)`(?::\s*(.*))?$")
RUNS, REFERENCE = "runs", "reference"


def default_runs_dir() -> Path:
    """Where ``attnlab experiment`` writes by default, seen from this process's working directory."""
    return Path(os.environ.get(ENV_DIR) or Path("runs") / "experiments").resolve()


def reference_dir() -> Path:
    return Path(str(resources.files("attnlab") / "experiments" / "reference"))


@dataclass(frozen=True)
class Run:
    """One result folder found by ``list_results``: its source, its folder relative to the root, the entry."""

    source: str
    run: str  # posix path relative to the source's root, e.g. "context-cost" or "quick/context-cost"
    entry: dict[str, Any]

    def files(self) -> dict[str, Path]:
        """The files of this run that may be served, by name: its PNGs and its results.json."""
        folder = Path(self.entry["dir"]).resolve()
        inside = [Path(f) for f in self.entry["figures"]] + [Path(self.entry["results"])]
        # A results.json may name any file; serve only PNGs (and the JSON) that sit in the run's own folder.
        return {p.name: p for p in inside if p.resolve().parent == folder and p.suffix in (".png", ".json")}


def _scan(source: str, root: Path, skipped: list[str] | None = None) -> list[Run]:
    """Result folders under ``root`` and one level below it (``root/GROUP/NAME/results.json``); the
    files ``list_results`` skips are appended to ``skipped`` (relative to ``root``)."""
    if not root.is_dir():
        return []
    roots = [root, *sorted(p for p in root.iterdir() if p.is_dir() and not (p / RESULTS_FILE).exists())]
    runs = []
    base = root.resolve()
    for r in roots:
        found: list[str] = []
        entries = list_results(r, skipped=found)
        if skipped is not None:
            group = "" if r == root else r.name.encode("utf-8", errors="replace").decode() + "/"
            skipped.extend(group + line for line in found)
        for entry in entries:
            folder = Path(entry["dir"])
            try:
                rel = folder.relative_to(base).as_posix()
            except ValueError:  # a symlink leading elsewhere: keep it out of the index
                continue
            runs.append(Run(source, rel, entry))
    return runs


class Index:
    """Every run of both sources; built per request (a few small files), so new runs show up at once."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self.skipped: list[str] = []  # "folder/results.json: why", for the user's runs
        self.runs = _scan(RUNS, runs_dir, self.skipped) + _scan(REFERENCE, reference_dir())

    def find(self, source: str, run: str) -> Run:
        for r in self.runs:
            if r.source == source and r.run == run:
                return r
        raise NotFoundError(f"no experiment result {source}/{run}")


def file_path(runs_dir: Path, source: str, run: str, name: str) -> Path:
    """The path of one servable file (a PNG or results.json of a run in the index), else a 404."""
    found = Index(runs_dir).find(source, run).files().get(name)
    if found is None or not found.is_file():
        raise NotFoundError(f"experiment result {source}/{run} has no file {name!r}")
    return found


@dataclass(frozen=True)
class Explanation:
    title: str
    intro_html: str
    figures: dict[str, tuple[str, str]]  # file name -> (title, caption html)
    discussion_html: str


@lru_cache(maxsize=16)
def explanation(name: str) -> Explanation:
    """``content/experiments/NAME.md`` split into intro, one caption per ``## Figure `file.png`: title``
    section, and the remaining sections (what the reference run showed)."""
    path = EXPLANATIONS_DIR / f"{name}.md"
    if not path.is_file():
        return Explanation(name, "", {}, "")
    lines = path.read_text(encoding="utf-8").splitlines()
    title = lines[0].lstrip("#").strip() if lines and lines[0].startswith("# ") else name
    body = lines[1:] if lines and lines[0].startswith("# ") else lines
    intro: list[str] = []
    rest: list[str] = []
    figures: dict[str, tuple[str, list[str]]] = {}
    current: list[str] = intro
    for line in body:
        fig = _FIGURE.match(line.strip())
        if fig:
            figures[fig[1]] = (fig[2] or fig[1], [])
            current = figures[fig[1]][1]
        elif line.startswith("## "):
            current = rest
            current.append(line)
        else:
            current.append(line)
    return Explanation(
        title=title, intro_html=render("\n".join(intro)),
        figures={f: (t, render("\n".join(c))) for f, (t, c) in figures.items()},
        discussion_html=render("\n".join(rest)),
    )


def _url(source: str, run: str, name: str) -> str:
    return f"/api/experiments/{source}/{quote(run)}/{quote(name)}"


def shown_path(path: Path) -> str:
    """``path`` as the page may see it: relative to the server's working folder (or ``~``) when inside
    it, else only its last two parts; the page is never told where the user's files are."""
    for base, prefix in ((Path.cwd().resolve(), ""), (Path.home().resolve(), "~/")):
        try:
            return prefix + (path.relative_to(base).as_posix() or ".")
        except ValueError:
            continue
    return ".../" + "/".join(path.parts[-2:])


def _scrub(text: str) -> str:
    """``text`` with the server's working folder and the user's home written as ``.`` and ``~`` (a
    recorded command line or note may name files by absolute path)."""
    for base, short in ((Path.cwd().resolve(), "."), (Path.home().resolve(), "~")):
        if len(base.parts) > 1:
            text = text.replace(str(base), short)
    return text


def _strings(value: object) -> list[str]:
    return [_scrub(str(x)) for x in value if isinstance(x, str | int | float)] if isinstance(value, list) else []


def _result_set(r: Run, text: Explanation) -> s.ExperimentResultSet:
    """One run's card; a results.json of the wrong shape gives empty fields, never an error for the page."""
    try:
        record = read_results(r.entry["results"])
    except ResultsFileError:  # changed since it was listed
        record = {}
    machine = record.get("machine") if isinstance(record.get("machine"), dict) else {}
    elapsed = record.get("elapsed_s")
    figures = []
    for name in (n for n in r.files() if n.endswith(".png")):
        title, caption = text.figures.get(name, (name, ""))
        figures.append(s.ExperimentFigure(file=name, url=_url(r.source, r.run, name), title=title, caption_html=caption))
    mode = str(r.entry.get("mode") or "")
    where = "reference run shipped with attnlab" if r.source == REFERENCE else f"your run: {r.run}"
    return s.ExperimentResultSet(
        id=f"{r.source}/{r.run}", source=r.source, label=f"{where} ({mode or 'mode unknown'} mode)", mode=mode,
        command=_scrub(str(record.get("command") or "")), summary=_strings(r.entry.get("summary")),
        notes=_strings(record.get("notes")),
        machine={str(k): _scrub(str(v)) for k, v in machine.items()},
        elapsed_s=float(elapsed) if isinstance(elapsed, int | float) and not isinstance(elapsed, bool)
        and math.isfinite(elapsed) else None,
        figures=figures, results_url=_url(r.source, r.run, RESULTS_FILE),
    )


def _mtime(r: Run) -> float:
    try:
        return Path(r.entry["results"]).stat().st_mtime if r.source == RUNS else 0.0
    except OSError:
        return 0.0


def experiments(runs_dir: Path) -> s.ExperimentsResponse:
    """Every built-in experiment with its explanation and result sets (your runs, newest first, then the reference)."""
    index = Index(runs_dir)
    out = []
    for name in EXPERIMENTS:
        text = explanation(name)
        mine = [r for r in index.runs if r.entry["name"] == name]
        mine.sort(key=lambda r: (r.source != RUNS, -_mtime(r), r.run))  # yours, newest first; then the reference
        title = next((r.entry["title"] for r in mine if r.entry.get("title")), "")
        out.append(s.Experiment(
            name=name, title=text.title, subtitle=title, intro_html=text.intro_html,
            discussion_html=text.discussion_html, command=f"attnlab experiment {name} --quick",
            results=[_result_set(r, text) for r in mine],
        ))
    yours = sum(r.source == RUNS for r in index.runs)
    shown = shown_path(runs_dir)
    note = (f"{yours} run{'s' if yours != 1 else ''} of yours found in {shown}" if yours else
            f"no runs of yours in {shown} (where `attnlab experiment NAME` writes when started from "
            "the server's folder): showing the reference runs shipped with attnlab")
    if index.skipped:
        note += f"; {len(index.skipped)} result file{'s' if len(index.skipped) != 1 else ''} skipped (listed below)"
    return s.ExperimentsResponse(experiments=out, runs_dir=shown, note=note, skipped=[_scrub(x) for x in index.skipped])


def routes(router: APIRouter, mount: Mount) -> None:
    """``GET /api/experiments`` (every result set in ``mount.runs_dir`` and the references) and
    ``GET /api/experiments/{source}/{run}/{name}`` (one of their files: a plot or a JSON)."""

    @router.get("/api/experiments", name="experiments_index")
    async def experiments_index() -> s.ExperimentsResponse:
        return await anyio.to_thread.run_sync(experiments, mount.runs_dir)

    @router.get("/api/experiments/{source}/{run:path}/{name}", include_in_schema=False, name="experiment_file")
    async def experiment_file(source: str, run: str, name: str) -> Response:
        path = await anyio.to_thread.run_sync(file_path, mount.runs_dir, source, run, name)
        kind = "image/png" if path.suffix == ".png" else "application/json"
        return FileResponse(path, media_type=kind, headers={"Cache-Control": "no-cache"})
