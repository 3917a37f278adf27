"""Two machines, simulated on one: two torchrun agents started as two machines would start them (each
in its own session, ``--nnodes 2 --node-rank 0/1 --rdzv-backend c10d``, one shared ``--out``), for DDP
and FSDP: they start, train, save and resume, and give the losses of one process with the same global
batch. And what happens around a run: a worker whose agent is killed stops; a refusal reaches every rank.
"""

from __future__ import annotations

import contextlib
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

from attnlab.train.loop import read_metrics

LOCK_FILE = ".attnlab-run.lock"  # attnlab.train.runs's name


def corpus(folder: Path) -> None:
    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler"]
    (folder / "corpus.txt").write_text("".join(" ".join(rng.choice(words) for _ in range(9)) + "\n" for _ in range(400)))


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc), so that a failed test leaves nothing running."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie waiting for its new parent to reap it counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def kill_all(procs: list[subprocess.Popen], workers: list[int]) -> None:
    for pid in workers + [w for p in procs for w in descendants(p.pid)]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def torchrun(node_args: list[list[str]], args: list[str], cwd: Path, timeout: float = 240) -> list[tuple[int, str]]:
    """One torchrun agent per entry of ``node_args``, each in a session of its own (as on separate
    machines); returns each agent's exit status and output."""
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *node, "-m", "attnlab", *args], cwd=cwd,
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for node in node_args]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
        return [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]
    finally:
        kill_all(procs, [])


def two_machines(args: list[str], cwd: Path) -> None:
    port = free_port()
    nodes = [["--nnodes=2", f"--node-rank={n}", "--nproc-per-node=1", "--rdzv-backend=c10d",
              f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-machines"] for n in (0, 1)]
    results = torchrun(nodes, args, cwd)
    for n, (rc, out) in enumerate(results):
        assert rc == 0, f"node {n} exited {rc}:\n{out[-3000:]}"


def losses(folder: Path) -> dict[int, tuple[str, float]]:
    return {(r["step"], "loss" in r): r.get("loss", r.get("val_loss")) for r in read_metrics(folder / "metrics.jsonl")}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_machines_train_save_resume_and_match_one_process(tmp_path, strategy) -> None:
    corpus(tmp_path)
    common = ["train", "--data", "corpus.txt", "--eval-interval", "3", "--eval-iters", "2", "--warmup", "2",
              "--lr", "3e-3", "--decay-iters", "6", "--no-progress", "--device", "cpu", "--precision", "fp32",
              "--threads", "1"]
    one = subprocess.run([sys.executable, "-m", "attnlab", *common, "--iters", "6", "--out", "one", "--batch-size", "4"],
                         cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    # 3 steps and a checkpoint, then a resume to 6: one process per machine, --batch-size 2 each
    two = ["--out", "two", "--batch-size", "2", "--strategy", strategy]
    two_machines([*common, "--iters", "3", *two], tmp_path)
    two_machines([*common, "--iters", "6", "--resume", *two], tmp_path)

    expected, got = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(got) == sorted(expected) and len(got) == 8  # 6 steps, 2 validations; one writer
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    run = tmp_path / "two"
    assert ((run / "last" / "sharded").is_dir()) == (strategy == "fsdp")
    assert not list(run.glob(".*tmp*")) and not list(run.glob(".previous-run-*"))
    assert not (run / LOCK_FILE).exists()  # the lock was given back
    from attnlab.train.runs import RunLock

    RunLock.acquire(run).release()


@pytest.mark.slow
def test_a_refusal_stops_every_rank_with_the_same_line(tmp_path) -> None:
    from attnlab.train.runs import RunLock

    corpus(tmp_path)
    (tmp_path / "busy").mkdir()
    lock = RunLock.acquire(tmp_path / "busy")  # a live run of this process holds the folder
    try:
        results = torchrun([["--standalone", "--nproc-per-node=2"]],
                           ["train", "--data", "corpus.txt", "--out", "busy", "--iters", "2", "--no-progress"], tmp_path)
    finally:
        lock.release()
    rc, out = results[0]
    assert rc != 0
    refusals = [line for line in out.splitlines() if line.startswith("error:")]
    assert refusals == [f"error: busy is in use by another training run (process {os.getpid()} on host "
                        f"{socket.gethostname()}, started {lock.holder['started']}); wait for it to end or stop it, "
                        f"or choose another --out"] * 2, out[-3000:]
    assert "RunFolderError" not in out and out.count("Traceback") == 1  # only torchrun's own report


@pytest.mark.slow
def test_a_worker_stops_when_its_torchrun_agent_is_killed(tmp_path) -> None:
    corpus(tmp_path)
    agent = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", "attnlab", "train",
         "--data", "corpus.txt", "--out", "run", "--iters", "1000000", "--eval-interval", "1000", "--batch-size", "2",
         "--no-progress", "--device", "cpu", "--precision", "fp32"],
        cwd=tmp_path, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not ((tmp_path / "run" / "metrics.jsonl").is_file() and (tmp_path / "run" / "metrics.jsonl").stat().st_size):
            assert agent.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        workers = descendants(agent.pid)
        assert workers
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        deadline = time.monotonic() + 60  # generous: the worker checks every 0.5 s
        while not all(gone(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(gone(w) for w in workers), "the worker kept training after its agent was killed"
        # the run folder's lock went with it: a new run takes it over (the dead holder's record is replaced)
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] in workers
        from attnlab.train.runs import RunLock

        lock = RunLock.acquire(tmp_path / "run")
        assert lock.holder["pid"] == os.getpid()
        lock.release()
    finally:
        kill_all([agent], workers)


AGREE = """
import json, os
import torch
from attnlab.device import Precision
from attnlab.train import distributed
from attnlab.train.loop import agreed_precision
from attnlab.train.runs import temp_name

env = distributed.setup("cpu")
mine = Precision("bf16", torch.bfloat16, "probe: bf16 faster") if env.rank == 0 else Precision("fp32", None, "probe: slower")
agreed = agreed_precision(mine, env)
print(json.dumps({"rank": env.rank, "tag": temp_name(env), "precision": [agreed.name, str(agreed.dtype), agreed.reason]}))
distributed.teardown(env)
"""


@pytest.mark.slow
def test_ranks_agree_on_rank_0s_temporary_names_and_precision(tmp_path) -> None:
    """What differs per machine (process ids, a measured precision choice) is rank 0's on every rank."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", AGREE], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                              env={**child_env(), "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}) for r in (0, 1)]
    try:
        rows = [json.loads(p.communicate(timeout=120)[0].splitlines()[-1]) for p in procs]
    finally:
        kill_all(procs, [])
    assert [r["rank"] for r in rows] == [0, 1]
    assert [r["tag"] for r in rows] == [str(procs[0].pid)] * 2
    assert [r["precision"] for r in rows] == [["bf16", "torch.bfloat16", "probe: bf16 faster"]] * 2


@pytest.mark.slow
def test_a_machine_that_does_not_see_out_is_named(tmp_path) -> None:
    """Two machines whose --out are different folders (here: the same relative path from two working
    folders) are stopped with one line saying so, instead of failing on data rank 0 never wrote for them."""
    corpus(tmp_path)
    for n in (0, 1):
        (tmp_path / f"machine{n}").mkdir()
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={n}", "--nproc-per-node=1",
         "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=not-shared", "-m", "attnlab", "train",
         "--data", str(tmp_path / "corpus.txt"), "--out", "run", "--iters", "2", "--no-progress", "--device", "cpu"],
        cwd=tmp_path / f"machine{n}", env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True) for n in (0, 1)]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        kill_all(procs, [])
    errors = [line for out in outputs for line in out.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --out run is not the folder rank 0 ({socket.gethostname()}) writes, as seen from "
                      f"{socket.gethostname()}: every machine of a run must see --out at the same path on a shared "
                      f"file system"] * 2, "\n".join(outputs)[-3000:]
    assert all(p.returncode != 0 for p in procs)
