"""Experiments that test, on your own machine, what Transformers are said to do better.

Each experiment is a module with ``run(mode="tiny"|"quick"|"full", out=DIR) -> dict`` that writes
``DIR/results.json`` and PNG plots. ``attnlab experiment NAME`` runs one; ``list_results(root)``
indexes what has been run (the walkthrough reads it).
"""

from __future__ import annotations

import importlib
import json
import os
import stat
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


MAX_RESULTS_BYTES = 4 * 1024 * 1024  # a results.json is a few KB; a larger file is not one
MAX_RESULTS_DEPTH = 64  # nesting; the files `attnlab experiment` writes nest 4 levels


class ResultsFileError(ValueError):
    """A ``results.json`` that cannot be shown: ``path`` and ``reason``; the message is ``"PATH: REASON"``."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{_printable(str(path))}: {reason}")
        self.path, self.reason = path, reason


def _printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (a file name's undecodable bytes) shown as ``?``."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def read_results(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path`` (a run's ``results.json``), read safely whatever the file is.

    Only a regular file of at most ``MAX_RESULTS_BYTES`` bytes is read (a FIFO or device is refused
    without blocking); it must be UTF-8 JSON holding an object nested at most ``MAX_RESULTS_DEPTH``
    levels, whose strings are text (no lone UTF-16 surrogates, ``"\\ud800"``) and whose numbers fit a
    float (``NaN``/``Infinity`` read as ``None``). Raises ``ResultsFileError`` naming the problem.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO for reading must not wait for a writer
    except OSError as exc:
        raise ResultsFileError(path, f"cannot be read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ResultsFileError(path, "is not a regular file")
        if info.st_size > MAX_RESULTS_BYTES:
            raise ResultsFileError(path, f"is {info.st_size:,} bytes; a results file holds at most "
                                         f"{MAX_RESULTS_BYTES:,}")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_RESULTS_BYTES + 1)
    except OSError as exc:
        raise ResultsFileError(path, f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    try:
        record = json.loads(data.decode("utf-8"), parse_constant=lambda _: None)
    except UnicodeDecodeError as exc:
        raise ResultsFileError(path, f"is not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise ResultsFileError(path, f"nests more than {MAX_RESULTS_DEPTH} levels deep") from None
    except ValueError as exc:  # not JSON, or an integer over Python's digit limit
        raise ResultsFileError(path, f"is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(record, dict):
        raise ResultsFileError(path, f"holds a JSON {type(record).__name__}, not an object")
    _check_values(path, record)
    return record


def _check_values(path: Path, record: dict[str, Any]) -> None:
    stack: list[tuple[Any, int]] = [(record, 1)]
    while stack:  # iterative: any depth is walked without recursion
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_RESULTS_DEPTH:
                raise ResultsFileError(path, f"nests more than {MAX_RESULTS_DEPTH} levels deep")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
        elif isinstance(value, str) and not _is_text(value):
            raise ResultsFileError(path, "holds a string with a lone UTF-16 surrogate, which is not text")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**1024:
            raise ResultsFileError(path, f"holds an integer of {len(str(abs(value)))} digits, too large for a float")


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name the system refuses (too long, not encodable)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def list_results(root: str | Path = Path("runs") / "experiments",
                 skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Every experiment result under ``root`` (one folder per run holding ``results.json`` + PNGs).

    Returns one entry per folder, sorted by experiment name: ``name``, ``title``, ``mode``,
    ``summary``, ``dir`` (absolute path), ``results`` (path of the JSON) and ``figures`` (absolute
    paths of the PNGs that exist). Folders whose JSON ``read_results`` refuses (missing, not a regular
    file, too large, not UTF-8 JSON, not an object, nested too deep, a lone surrogate, an integer too
    large for a float) or whose folder name is not UTF-8 are skipped, each with a one-line reason
    appended to ``skipped`` when given; fields of the wrong type read as empty (a ``summary`` that is
    not a list of strings, a ``figures`` entry that is not the name of a file in the folder).
    """
    root = Path(root)
    entries = []
    if not root.is_dir():
        return entries
    for path in sorted(root.glob(f"*/{RESULTS_FILE}")):
        try:
            if not _is_text(str(path.parent.resolve())):
                raise ResultsFileError(path, "its folder's name is not UTF-8 text")
            record = read_results(path)
        except ResultsFileError as exc:
            if skipped is not None:
                skipped.append(f"{_printable(path.relative_to(root).as_posix())}: {exc.reason}")
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
            "figures": [str(folder / f) for f in figures if isinstance(f, str) and f and _is_file(folder / f)],
        })
    return sorted(entries, key=lambda e: (e["name"], e["dir"]))


def _text(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


__all__ = ["EXPERIMENTS", "MODES", "ResultsFileError", "list_results", "read_results", "run_experiment"]
