"""Run folders: a folder holds one training run, and nothing a run does loses another's work.

``claim_run_folder`` decides, before any long work, whether a run may use its ``--out``: a fresh
run needs a folder without a run (unless ``overwrite``, which replaces only what a run wrote);
``resume`` needs a ``last`` checkpoint. ``check_resume`` refuses a resumed config that would change
the training (anything outside ``RESUME_MAY_CHANGE``) or data whose content differs from what the
run trained on (SHA-256 fingerprints). ``restore_run_folder`` undoes a run that failed before its
first checkpoint. The loop (``attnlab.train.loop``) calls them in that order.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from attnlab.files import unwritable_reason
from attnlab.train import distributed
from attnlab.train.config import RESUME_MAY_CHANGE, TrainConfig
from attnlab.train.data import corpus_files, files_fingerprint
from attnlab.weights.checkpoint import CheckpointError, is_checkpoint_dir, load_training_state, pid_alive


class RunFolderError(ValueError):
    """A run folder this run may not use as asked (it holds another run, it is a file, a resume that
    would change the run); the message names the folder or the fields and says what to do."""

    exit_code = 2  # the command line reports it as a usage error


RUN_ENTRIES = ("last", "best", ".last.old", ".best.old", "snapshots", "data", "metrics.jsonl", "loss.png")
_CHECKPOINT_ENTRIES = ("last", "best", ".last.old", ".best.old")
_DATA_FILES = ("tokens.npy", "split.json")


def _ours(entry: Path) -> bool:
    """Whether a run-folder entry is something a run wrote (so that --overwrite may replace it)."""
    if entry.is_symlink():
        return False
    if entry.name in _CHECKPOINT_ENTRIES:
        return is_checkpoint_dir(entry)
    if entry.name == "snapshots":
        return entry.is_dir() and all(is_checkpoint_dir(p) or p.name.startswith(".") for p in entry.iterdir())
    if entry.name == "data":
        return entry.is_dir() and all(p.name in _DATA_FILES or p.name.startswith(".") for p in entry.iterdir())
    return entry.is_file()


def _check_writable(folder: Path, what: str) -> None:
    reason = unwritable_reason(folder)
    if reason is not None:
        raise RunFolderError(f"{what} {folder}: {reason}")


def claim_run_folder(cfg: TrainConfig) -> list[Path]:
    """Check that this run may use ``cfg.out``, before any long work; returns the entries of a
    previous run that ``overwrite`` will replace.

    A fresh run needs a folder that holds no run (absent, empty, or with only files of the user's
    whose names a run does not use); ``resume`` needs a ``last`` checkpoint, and every run entry
    present must be one a run wrote (a link to ``last`` would be refused only at the first save, after
    training); ``overwrite`` replaces only entries a run wrote. Raises ``RunFolderError`` naming the
    folder and what to do.
    """
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; a run needs a folder (choose a new path)")
    _check_writable(out, "--out")
    aside = [p for p in out.glob(".previous-run-*") if not pid_alive(int(p.name.rsplit("-", 1)[-1] or 0))] \
        if out.is_dir() else []
    if aside:
        raise RunFolderError(f"{aside[0]} holds a run set aside by an --overwrite run that was killed before its "
                             f"first checkpoint; move its contents back into {out} (or delete it) first")
    present = [out / n for n in RUN_ENTRIES if (out / n).exists() or (out / n).is_symlink()]
    if cfg.resume:
        if not ((out / "last").is_dir() or (out / ".last.old").is_dir()):
            raise RunFolderError(f"{out}: no run to resume (no last/ checkpoint); drop --resume to start one")
        for entry in present:  # the run replaces or appends to each: checked now, not at its first save
            if entry.is_symlink():
                raise RunFolderError(f"{entry} is a symbolic link; a run writes only the real files and folders it "
                                     f"made (put what the link points to in its place, or choose another --out)")
            if not _ours(entry):
                raise RunFolderError(f"{entry} is not what a run wrote (not a checkpoint or a run's data), and "
                                     f"resuming would replace it; move it away first")
        return []
    if present and not cfg.overwrite:
        names = ", ".join(p.name for p in present)
        raise RunFolderError(f"{out} already holds a training run ({names}); add --resume to continue it, "
                             f"--overwrite to replace it, or choose another --out")
    for entry in present:
        if not _ours(entry):
            raise RunFolderError(f"--overwrite replaces only what a run wrote, and {entry} is not (not a "
                                 f"checkpoint or a run's data); move it away or choose another --out")
    return present


def run_entry_holding(path: str | Path) -> Path | None:
    """The entry of a run folder that ``path`` lies inside (links resolved): ``data``, ``snapshots`` or
    a checkpoint the run replaces whole, of a folder that holds a run (``last`` or ``metrics.jsonl``);
    None when there is none. A run deletes or replaces these entries, so nothing else goes inside them."""
    for entry in Path(os.path.abspath(path)).resolve().parents:
        run = entry.parent
        if entry.name in RUN_ENTRIES and any((run / name).exists() for name in ("last", ".last.old", "metrics.jsonl")):
            return entry
    return None


def saved_train_config(out: str | Path) -> dict[str, Any]:
    """The ``TrainConfig`` (as JSON) recorded in ``out/last``: what ``--resume`` continues."""
    if not ((Path(out) / "last").is_dir() or (Path(out) / ".last.old").is_dir()):
        raise RunFolderError(f"{out}: no run to resume (no last/ checkpoint); drop --resume to start one")
    info = load_training_state(Path(out) / "last").info
    saved = info.get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{Path(out) / 'last'}: its training state records no train_config")
    return saved


def fingerprints_of(cfg: TrainConfig) -> dict[str, str | None]:
    """Content fingerprints of every data file the run reads (missing files raise ``DataError``)."""
    return {key: None if getattr(cfg, key) is None else files_fingerprint(corpus_files(getattr(cfg, key), cfg.seed))
            for key in ("data", "target_data", "val_data")}


def check_resume(saved: dict[str, Any], info: dict[str, Any], cfg: TrainConfig,
                 current: dict[str, str | None] | None = None) -> None:
    """Refuse a resume that would change the run: any field outside ``RESUME_MAY_CHANGE`` that differs
    from the saved config, and data files whose content differs from what the run trained on.

    Data paths may differ (a moved corpus) when the content fingerprint is the same. Raises
    ``RunFolderError`` naming each field with both values.
    """
    now = json.loads(json.dumps(asdict(cfg)))
    saved_prints = info.get("fingerprints")
    paths = ("data", "target_data", "val_data")
    diffs = [f"{k}: saved {saved[k]!r}, now {now[k]!r}" for k in now
             if k in saved and k not in RESUME_MAY_CHANGE and saved[k] != now[k]
             and not (k in paths and isinstance(saved_prints, dict))]
    if isinstance(saved_prints, dict):
        current = fingerprints_of(cfg) if current is None else current
        diffs += [f"{k}: the content of {now[k]!r} differs from the {saved.get(k)!r} the run trained on"
                  for k in paths if saved_prints.get(k) != current[k]]
    if diffs:
        allowed = ", ".join(sorted(RESUME_MAY_CHANGE - {"resume", "overwrite", "out"}))
        raise RunFolderError(f"--resume would change the run in {cfg.out}: {'; '.join(diffs)}. A resumed run may "
                             f"change only {allowed}; start a new --out to train differently")


def restore_run_folder(out: Path, aside: Path | None, created: bool) -> None:
    """Undo a run that failed before its first checkpoint: its entries go, the previous run's return."""
    for name in RUN_ENTRIES:
        entry = out / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.exists() or entry.is_symlink():
            entry.unlink(missing_ok=True)
    if aside is not None and aside.is_dir():
        for entry in aside.iterdir():
            os.replace(entry, out / entry.name)
        aside.rmdir()
    if created:
        with contextlib.suppress(OSError):
            out.rmdir()


def temp_name(env: distributed.DistEnv) -> str:
    """Shared by all ranks of one torchrun launch (their parent), unique to this process otherwise."""
    return str(os.getppid() if env.enabled else os.getpid())


