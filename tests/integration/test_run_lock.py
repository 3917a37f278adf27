"""One live run per run folder: a second writer is refused in one line naming the holder; the lock of
a process that has ended is taken over; the metrics of the folder's run never go backwards."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnlab.cli import main
from attnlab.train.loop import read_metrics
from attnlab.train.runs import RunFolderError

LOCK_FILE = ".attnlab-run.lock"  # attnlab.train.runs's name: the live run's lock and record


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def make_corpus(path: Path) -> None:
    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question"]
    path.write_text("".join(" ".join(rng.choice(words) for _ in range(9)) + "\n" for _ in range(300)))


def attnlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnlab", *args], cwd=cwd, env=child_env(), capture_output=True,
                          text=True, timeout=240)


def busy_message(out: str, holder: dict) -> str:
    return (f"error: {out} is in use by another training run (process {holder['pid']} on host {holder['host']}, "
            f"started {holder['started']}); wait for it to end or stop it, or choose another --out")


@pytest.mark.slow
def test_a_second_run_into_a_live_run_folder_is_refused_naming_the_holder(tmp_path) -> None:
    make_corpus(tmp_path / "corpus.txt")
    first = subprocess.Popen(
        [sys.executable, "-m", "attnlab", "train", "--data", "corpus.txt", "--out", "run", "--iters", "1000000",
         "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2", "--no-progress", "--precision", "fp32"],
        cwd=tmp_path, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "run" / "last").is_dir():
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.2)
        for args in (["--resume"], ["--data", "corpus.txt", "--overwrite"]):
            second = attnlab("train", "--out", "run", *args, cwd=tmp_path)
            assert second.returncode == 2, (args, second.stderr[-2000:])
            holder = {"pid": first.pid, "host": socket.gethostname(),
                      "started": json.loads((tmp_path / "run" / LOCK_FILE).read_text())["started"]}
            assert second.stderr.splitlines() == [busy_message("run", holder)], args
        assert first.poll() is None  # the first run trains on, alone
    finally:
        first.kill()
        first.wait()
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, len(steps) + 1))  # one writer: the step never goes backwards

    # the first run was killed (-9): its lock went with it, and a resume takes the folder over
    done = attnlab("train", "--out", "run", "--resume", "--iters", str(steps[-1] + 2), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_the_lock_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys) -> None:
    from attnlab.train.runs import RunLock

    out = tmp_path / "run"
    out.mkdir()
    lock = RunLock.acquire(out)
    assert json.loads((out / LOCK_FILE).read_text()) == lock.holder
    assert lock.holder["pid"] == os.getpid() and lock.holder["host"] == socket.gethostname()
    with pytest.raises(RunFolderError) as refused:  # another open of the lock file: another writer
        RunLock.acquire(out)
    assert "error: " + str(refused.value) == busy_message(str(out), lock.holder)
    assert main(["train", "--out", str(out), "--data", str(out / "x.txt")]) == 2
    assert capsys.readouterr().err.splitlines() == [busy_message(str(out), lock.holder)]
    lock.release()

    # a holder killed with -9 while it held the lock: its record stays, its lock does not
    script = (f"import os, sys; from attnlab.train.runs import RunLock; lock = RunLock.acquire({str(out)!r}); "
              "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", script], env=child_env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(RunFolderError, match=rf"in use by another training run \(process {holder.pid} on host "):
        RunLock.acquire(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid  # the dead holder's record
    taken = RunLock.acquire(out)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    taken.release()
    assert list(out.iterdir()) == []  # nothing left behind
