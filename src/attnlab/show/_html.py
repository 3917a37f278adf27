"""Self-contained HTML: the walkthrough's drawing code, inlined at render time, plus one view's data.

The walkthrough's ``web/static/views.js`` is an ES module of pure drawing functions. A notebook
output cannot import a file, so its text is read from the installed package when a view renders and
wrapped in a function that returns its exports: the same code, never a copy kept in this package.
``show.js`` (beside this file) wires a view's data to those functions. Nothing is fetched: no CDN,
no server, no URL (the only ``http`` strings are XML namespace names, which browsers never load).
"""

from __future__ import annotations

import html
import json
import re
import uuid
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

_EXPORT = re.compile(r"^export\s+(?:async\s+)?(function|const|let|class)\s+([A-Za-z_$][\w$]*)", re.MULTILINE)

_CSS = """
.attnlab-show { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; }
.attnlab-show h4 { margin: 6px 0; font-size: 15px; }
.attnlab-show .note { color: #5b6475; margin: 2px 0 8px; }
.attnlab-show .controls { display: flex; gap: 12px; align-items: center; margin: 4px 0 8px; }
.attnlab-show .grid { display: flex; flex-wrap: wrap; gap: 6px; }
.attnlab-show .cell { border: 1px solid #d8dde6; background: #fff; border-radius: 4px; padding: 3px; font-size: 11px;
  text-align: center; cursor: pointer; }
.attnlab-show .cell[aria-pressed=true] { border-color: #2456c7; box-shadow: 0 0 0 2px #2456c7; }
.attnlab-show .cell .role { color: #2456c7; display: block; min-height: 1.3em; }
.attnlab-show .grid.head-matrix { display: grid; gap: 3px; align-items: center; max-width: 640px; }
.attnlab-show .head-matrix .axis { font-size: 11px; color: #5b6475; text-align: center; }
.attnlab-show .head-matrix .cell svg { width: 100%; height: auto; display: block; }
.attnlab-show .head-matrix .cell.top { border-color: #d0641c; box-shadow: 0 0 0 2px #d0641c; }
.attnlab-show ol.ranking { padding-left: 0; list-style: none; }
.attnlab-show ol.ranking li { margin: 2px 0; display: grid; grid-template-columns: 5.5em 8.5em 8.5em minmax(0, 1fr); gap: 4px;
  align-items: center; white-space: nowrap; }
.attnlab-show table.numbers { border-collapse: collapse; font: 12px/1.3 ui-monospace, monospace; }
.attnlab-show table.numbers th, .attnlab-show table.numbers td { border: 1px solid #d8dde6; padding: 2px 5px;
  text-align: center; white-space: nowrap; }
.attnlab-show table.numbers th { background: #eef1f6; }
.attnlab-show .tokens span { display: inline-block; padding: 2px 4px; margin: 1px; border-radius: 3px;
  border: 1px solid #d8dde6; font: 14px ui-monospace, monospace; white-space: pre; }
.attnlab-show .row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.attnlab-show .contexts .tokens span { display: inline-block; padding: 1px 3px; margin: 1px; border: 1px solid #d8dde6; border-radius: 3px;
  font: 13px ui-monospace, monospace; white-space: pre; }
.attnlab-show .contexts .tokens span.query { background: #cfe0ff; border-color: #2456c7; }
.attnlab-show .contexts .tokens span.key { background: #ffe1c7; border-color: #d0641c; }
"""


def _static(package: str, name: str) -> str:
    return (resources.files(package) / name).read_text(encoding="utf-8")


@cache
def views_module() -> str:
    """``views.js`` as a plain function returning an object of its exports (read once per process)."""
    source = _static("attnlab.web", "static/views.js")
    names = [m.group(2) for m in _EXPORT.finditer(source)]
    if not names:
        raise RuntimeError("attnlab/web/static/views.js exports nothing; attnlab.show cannot draw")
    if re.search(r"^\s*import\s", source, re.MULTILINE):
        raise RuntimeError("views.js imports another module; attnlab.show inlines views.js alone")
    body = _EXPORT.sub(lambda m: m.group(0).replace("export ", "", 1), source)
    return "function () {\n" + body + "\nreturn { " + ", ".join(names) + " };\n}"


def _json_for_script(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``</`` can close the element early."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


@dataclass
class View:
    """One view: ``data`` is what it draws (plain JSON values, the tools' own numbers)."""

    kind: str
    title: str
    data: dict[str, Any]
    note: str = ""

    @property
    def html(self) -> str:
        """A self-contained HTML fragment (style, markup, data and code), rendered anew on every access
        with a fresh element id: a view shown twice in a notebook draws into each of its outputs, since
        each output's script finds its own element."""
        uid = "attnlab-" + uuid.uuid4().hex
        wiring = _static("attnlab.show", "show.js")
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return (
            f'<div class="attnlab-show" id="{uid}" data-kind="{self.kind}">'
            f"<style>{_CSS}</style><h4>{html.escape(self.title)}</h4>{note}"
            f'<div class="view-root"></div>'
            f'<script type="application/json" class="view-data">{_json_for_script(self.data)}</script>'
            f"<script>(function () {{\nconst V = ({views_module()})();\n{wiring}\n"
            f'const root = document.getElementById("{uid}");\n'
            f'renderView("{self.kind}", root.querySelector(".view-root"), '
            f'JSON.parse(root.querySelector(".view-data").textContent), V);\n}})();</script></div>'
        )

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str | Path) -> Path:
        """Write a standalone HTML page (opens offline in any browser); returns the path."""
        path = Path(path)
        page = (
            f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"</head><body>{self.html}</body></html>\n"
        )
        path.write_text(page, encoding="utf-8")
        return path
