"""pyproject.toml says what attnlab needs, no more and no less (issue 22, item 9).

Every package the library imports is a main dependency (or installed by one), so every CLI subcommand
works on a plain ``pip install attnlab``: ``attnlab bleu`` once raised ``ImportError`` because
``sacrebleu`` was a dev extra. And every main dependency is imported somewhere in ``src/``: ``rich``
was declared and never used.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "attnlab"
#: Imported by the library but deliberately not a main dependency: the module, and why.
OPTIONAL = {
    "transformers": "dev extra: `attnlab bench` compares against Hugging Face and names the package when it is "
                    "missing (cli.bench); the library's converters take a transformers model the caller made",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def main_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_name(r) for r in project["dependencies"]}


def installed_with(names: set[str]) -> set[str]:
    """``names`` and everything they require (not their extras), transitively."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:  # a requirement whose marker leaves it out here (python_version < ...)
            continue
        todo += [_name(req) for req in requires if "extra ==" not in req]
    return seen


def imported_modules() -> dict[str, list[str]]:
    """Top-level third-party modules imported anywhere in src/attnlab, with the files importing them."""
    found: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("attnlab", "__future__"):
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


@functools.cache
def _packages() -> dict[str, list[str]]:
    return md.packages_distributions()


def distributions_of(module: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in _packages().get(module, [module])}


def test_every_imported_package_is_installed_by_the_main_dependencies() -> None:
    available = installed_with(main_dependencies())
    missing = {module: files for module, files in imported_modules().items()
               if module not in OPTIONAL and not distributions_of(module) & available}
    assert missing == {}, f"imported but not installed by [project] dependencies: {missing}"


def test_every_main_dependency_is_imported_by_the_library() -> None:
    used = set().union(*(distributions_of(module) for module in imported_modules()))
    assert main_dependencies() - used == set()


def test_the_bleu_command_needs_only_main_dependencies() -> None:
    assert "sacrebleu" in imported_modules() and "sacrebleu" in main_dependencies()
