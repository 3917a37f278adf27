"""Run folders: a folder holds one training run, and nothing a run does loses another's work.

``hold_run_folder`` keeps one live run per folder: the run's main process (global rank 0 under
torchrun) holds a lock file in ``--out`` (``RunLock``: an ``flock``, so the operating system releases
it when the process dies, however it dies) that records its host, process id and start time; a second
run into the same folder is refused naming that holder.
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
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
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


def claim_run_folder(cfg: TrainConfig, *, holding: bool = False) -> list[Path]:
    """Check that this run may use ``cfg.out``, before any long work; returns the entries of a
    previous run that ``overwrite`` will replace.

    A folder a live run holds (``RunLock``) is refused naming that run, unless ``holding`` (this
    process holds the lock). A fresh run needs a folder that holds no run (absent, empty, or with only
    files of the user's whose names a run does not use); ``resume`` needs a ``last`` checkpoint, and
    every run entry present must be one a run wrote (a link to ``last`` would be refused only at the
    first save, after training); ``overwrite`` replaces only entries a run wrote. Raises
    ``RunFolderError`` naming the folder and what to do.
    """
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; a run needs a folder (choose a new path)")
    _check_writable(out, "--out")
    if not holding:
        check_not_busy(out)
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
    """The suffix of this run's temporary names (``.prepare.tmp-NAME``, a sharded save's
    ``.last.tmp-NAME``): the main process's id (global rank 0 under torchrun), sent to every rank, so that
    all the processes of a run agree on it whichever machine they run on. A collective call: every rank
    makes it at the same point. Temporary names of a run are cleaned up by its main process only, on the
    machine where that id means something (``remove_stale_temporaries``)."""
    return str(distributed.broadcast_object(os.getpid(), env))


LOCK_FILE = ".attnlab-run.lock"  # held (flock) by the live run; holds its record: host, pid, started


@dataclass
class RunLock:
    """The lock of one live run on its run folder (see the module docstring); ``release`` gives it up.

    ``OUT/.attnlab-run.lock`` is locked with ``flock`` and holds ``holder``: ``host``, ``pid`` and
    ``started`` (UTC) as JSON. The operating system releases an ``flock`` when its process ends,
    however it ends, so the lock of a run killed with ``-9`` is free at once, and the next run takes it
    over (its record stays in the file until then). ``release`` removes the file while still holding
    it, and ``acquire`` checks that the file it locked is still the one at the path, so two runs never
    hold two copies. On a shared file system the lock holds across machines where ``flock`` does (NFSv4,
    Lustre mounted with ``flock``). (``filelock`` keeps its lock file after release and its descriptor
    private, so the record would need a second file, and a refused command would leave files behind.)
    """

    out: Path
    holder: dict[str, Any]
    _fd: int = field(default=-1, repr=False)

    @classmethod
    def acquire(cls, out: str | Path) -> RunLock:
        """Lock the existing folder ``out`` for this process, taking over a lock whose process ended.

        Raises ``RunFolderError`` naming the live holder (process id, host, start time) when another
        process holds it, or naming the lock file when it cannot be created. Where the platform or the
        file system has no ``flock``, one line on stderr says the folder is not locked."""
        out = Path(out)
        path = out / LOCK_FILE
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise RunFolderError(f"could not create {path} ({exc.strerror or exc})") from None
            try:
                _flock(fd)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderError(f"{out} is in use by another training run ({_holder_of(path)}); wait for it to "
                                     f"end or stop it, or choose another --out") from None
            except OSError as exc:  # no flock here (ENOLCK, EOPNOTSUPP on some file systems; Windows)
                print(f"attnlab: {out} is not locked ({exc.strerror or exc}): a second run into it would not be "
                      f"stopped", file=sys.stderr, flush=True)
                break
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)  # its holder removed it between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))  # at offset 0: the file was just opened
        return cls(out, holder, fd)

    def release(self, *, remove_folder: bool = False) -> None:
        """Give up the lock and remove its file; with ``remove_folder`` also remove ``out`` when it is
        empty then (a run that created the folder and failed before writing anything)."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            (self.out / LOCK_FILE).unlink()  # while held (see the class docstring)
        os.close(self._fd)
        self._fd = -1
        if remove_folder:
            with contextlib.suppress(OSError):
                self.out.rmdir()


def _flock(fd: int) -> None:
    """An exclusive ``flock`` on ``fd`` without waiting: ``BlockingIOError`` when another process holds
    it, another ``OSError`` where there is no ``flock``."""
    try:
        import fcntl
    except ImportError:  # Windows
        raise OSError("this platform has no flock") from None
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return {"host": str(holder["host"]), "pid": int(holder["pid"]), "started": str(holder["started"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _holder_of(path: Path) -> str:
    """The holder recorded in the lock file at ``path``, in words; re-read for up to 2 s while the
    holder has only just taken the lock (no record yet, or one naming an ended process of this machine)."""
    deadline = time.monotonic() + 2.0
    while True:
        holder = _read_holder(path)
        if holder is not None and (holder["host"] != socket.gethostname() or pid_alive(holder["pid"])):
            return f"process {holder['pid']} on host {holder['host']}, started {holder['started']}"
        if time.monotonic() > deadline:
            return f"a process that holds {path}"
        time.sleep(0.1)


def check_not_busy(out: str | Path) -> None:
    """Raise ``RunFolderError`` naming the holder when a live run holds ``out`` (nothing is held after)."""
    out = Path(out)
    if out.is_dir() and not out.is_symlink() and unwritable_reason(out) is None:
        RunLock.acquire(out).release()


@dataclass
class HeldFolder:
    """What ``hold_run_folder`` gives the loop: the previous run's entries ``overwrite`` replaces and
    whether this run created the folder (both known on the main rank only: ``[]`` and False elsewhere)."""

    replaced: list[Path]
    created: bool


@contextlib.contextmanager
def hold_run_folder(cfg: TrainConfig, env: distributed.DistEnv) -> Iterator[HeldFolder]:
    """Lock and claim ``cfg.out`` for this run while the block runs; a collective call.

    The main rank creates the folder, takes the lock (``RunLock``) and claims it (``claim_run_folder``,
    now that no other run can change it); every rank learns the outcome, so a refusal stops all of
    them with the same one-line ``RunFolderError``. Then every rank checks that it sees the folder the
    main rank locked (the same files at the same path): ``--out`` must be one folder for the whole run,
    on a file system every machine shares. On leaving, the lock is released, and a folder this run
    created is removed again if nothing but the lock was left in it.
    """
    out = Path(cfg.out)
    lock: RunLock | None = None
    held = HeldFolder([], False)
    problem: RunFolderError | None = None
    if env.is_main:
        try:
            claim_run_folder(cfg)  # a file, an unwritable folder, a busy one: refused before creating anything
            held.created = not out.exists()
            out.mkdir(parents=True, exist_ok=True)
            lock = RunLock.acquire(out)
            held.replaced = claim_run_folder(cfg, holding=True)
        except (RunFolderError, OSError) as exc:
            problem = exc if isinstance(exc, RunFolderError) else RunFolderError(f"--out {out}: {exc.strerror or exc}")
            if lock is not None:
                lock.release(remove_folder=held.created)
            elif held.created:
                with contextlib.suppress(OSError):
                    out.rmdir()
    message = distributed.broadcast_object(None if problem is None else str(problem), env)
    if message is not None:
        raise problem if problem is not None else RunFolderError(message)
    try:
        _check_same_folder(out, lock, env)
        yield held
    finally:
        if lock is not None:
            lock.release(remove_folder=held.created)


def _check_same_folder(out: Path, lock: RunLock | None, env: distributed.DistEnv) -> None:
    """Every rank reads the main rank's holder record in ``out``; raises ``RunFolderError`` on every rank
    naming the machines that do not see it (``--out`` is not shared with them)."""
    if not env.enabled:
        return
    expected = distributed.broadcast_object(None if lock is None else lock.holder, env)
    deadline = time.monotonic() + 10.0  # a shared file system may show a new file to other machines late
    while True:
        seen = _read_holder(out / LOCK_FILE)
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    missing = [host for host in distributed.gather_objects(None if seen == expected else socket.gethostname(), env)
               if host is not None]
    if missing:
        raise RunFolderError(f"--out {out} is not the folder rank 0 ({expected['host']}) writes, as seen from "
                             f"{', '.join(sorted(set(missing)))}: every machine of a run must see --out at the "
                             f"same path on a shared file system")
