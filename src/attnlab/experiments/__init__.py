"""Experiments that test, on your own machine, what Transformers are said to do better.

Each experiment is a module with ``run(mode="tiny"|"quick"|"full", out=DIR) -> dict`` that writes
``DIR/results.json`` and PNG plots. ``attnlab experiment NAME`` runs one; ``list_results(root)``
indexes what has been run (the walkthrough reads it).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from attnlab.experiments.common import MODES, RESULTS_FILE, Mode, check_mode, default_out

EXPERIMENTS: dict[str, str] = {
    "context-cost": "attnlab.experiments.context_cost",
    "rnn-vs-transformer": "attnlab.experiments.rnn_vs_transformer",
    "positions": "attnlab.experiments.positions",
    "heads-form": "attnlab.experiments.heads_form",
    "scaling": "attnlab.experiments.scaling",
    "induction-heads": "attnlab.experiments.induction_heads",
}


def run_experiment(name: str, mode: Mode = "quick", out: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run one experiment by name; an unknown name lists the known ones."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known experiments: {', '.join(EXPERIMENTS)}")
    module = importlib.import_module(EXPERIMENTS[name])
    return module.run(check_mode(mode), out if out is not None else default_out(name), **kwargs)


def list_results(root: str | Path = Path("runs") / "experiments") -> list[dict[str, Any]]:
    """Every experiment result under ``root`` (one folder per run holding ``results.json`` + PNGs).

    Returns one entry per folder, sorted by experiment name: ``name``, ``title``, ``mode``,
    ``summary``, ``dir`` (absolute path), ``results`` (path of the JSON) and ``figures`` (absolute
    paths of the PNGs that exist). Folders whose JSON is missing, unreadable or not a results object
    (a JSON list, a number...) are skipped; fields of the wrong type read as empty (a ``summary`` that
    is not a list of strings, a ``figures`` entry that is not a file name).
    """
    root = Path(root)
    entries = []
    if not root.is_dir():
        return entries
    for path in sorted(root.glob(f"*/{RESULTS_FILE}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
            continue
        if not isinstance(record, dict):
            continue
        folder = path.parent.resolve()
        figures = record.get("figures") if isinstance(record.get("figures"), list) else []
        summary = record.get("summary") if isinstance(record.get("summary"), list) else []
        entries.append({
            "name": _text(record.get("experiment"), folder.name),
            "title": _text(record.get("title")),
            "mode": _text(record.get("mode")),
            "summary": [line for line in summary if isinstance(line, str)],
            "dir": str(folder),
            "results": str(path.resolve()),
            "figures": [str(folder / f) for f in figures if isinstance(f, str) and f and (folder / f).is_file()],
        })
    return sorted(entries, key=lambda e: (e["name"], e["dir"]))


def _text(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


__all__ = ["EXPERIMENTS", "MODES", "list_results", "run_experiment"]
