"""FSDP2 (``--strategy fsdp``) with two CPU processes (gloo): the loss curve of one process with the same
global batch, a sharded checkpoint (one safetensors file per rank) that a single process consolidates,
and a resume from it that continues exactly."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import pytest
import torch

from attnlab.cli import main
from attnlab.train.loop import read_metrics
from attnlab.weights.checkpoint import (
    SHARDED_DIR,
    CheckpointError,
    is_sharded,
    load_checkpoint,
    load_training_state,
)


def run(args: list[str], cwd) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def losses(path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(path / "metrics.jsonl") if "loss" in r}


@pytest.mark.slow
def test_fsdp_matches_one_process_and_its_sharded_checkpoint_loads_and_resumes(tmp_path, capsys) -> None:
    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler"]
    (tmp_path / "corpus.txt").write_text("".join(" ".join(rng.choice(words) for _ in range(9)) + "\n" for _ in range(400)))
    common = ["train", "--data", "corpus.txt", "--eval-interval", "5", "--eval-iters", "2", "--warmup", "2",
              "--lr", "3e-3", "--decay-iters", "10", "--no-progress", "--device", "cpu", "--precision", "fp32"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "attnlab"]
    run([sys.executable, "-m", "attnlab", *common, "--iters", "10", "--out", "one", "--batch-size", "4"], tmp_path)
    run([*torchrun, *common, "--iters", "10", "--out", "two", "--batch-size", "2", "--strategy", "fsdp"], tmp_path)

    # 1. the same losses (train and validation) as one process with the same global batch
    one, two = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] and len(one) == 12  # 10 steps, 2 validations
    for a, b in zip(one, two, strict=True):
        key = "loss" if "loss" in a else "val_loss"
        assert b[key] == pytest.approx(a[key], abs=1e-5), (a, b)

    # 2. sharded: one file per rank, no whole-model file; one process consolidates it
    last = tmp_path / "two" / "last"
    assert is_sharded(last) and not (last / "model.safetensors").exists()
    assert len(list((last / SHARDED_DIR).glob("*.safetensors"))) == 2
    assert load_training_state(last).sharded == last
    whole, sharded = load_checkpoint(tmp_path / "one" / "last").model, load_checkpoint(last).model
    for (name, a), b in zip(whole.state_dict().items(), sharded.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4, msg=name)
    assert is_sharded(tmp_path / "two" / "best")
    assert main(["export", str(last), str(tmp_path / "exported"), "--dtype", "float32"]) == 0, capsys.readouterr().err
    exported = load_checkpoint(tmp_path / "exported").model
    for a, b in zip(sharded.state_dict().values(), exported.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)

    broken = tmp_path / "broken"
    shutil.copytree(last, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "d_model": config["d_model"] * 2}))
    with pytest.raises(CheckpointError, match=r"weights do not fit the model described by config\.json"):
        load_checkpoint(broken)  # checked against the shards' headers before anything is allocated

    # 3. stopped at step 5 and resumed from its sharded checkpoint: the uninterrupted run's losses, exactly
    run([*torchrun, *common, "--iters", "5", "--out", "part", "--batch-size", "2", "--strategy", "fsdp"], tmp_path)
    run([*torchrun, "train", "--out", "part", "--resume", "--iters", "10", "--no-progress"], tmp_path)
    assert losses(tmp_path / "part") == losses(tmp_path / "two")
    assert not list((tmp_path / "part").glob(".*tmp*")) and not list((tmp_path / "two").glob(".*tmp*"))
