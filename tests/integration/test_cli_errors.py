"""Every CLI error is one line, exit status 2 (usage) or 1 (runtime), never a traceback (issue 14,
items 7 and 8; issue 13 item 2, command-line side). Each row is a mistake a user made."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict

import pytest

from attnlab.cli import main
from attnlab.models import DecoderLM, TransformerConfig
from attnlab.tokenizers import CharTokenizer
from attnlab.train.config import TrainConfig
from attnlab.weights.checkpoint import TrainingState, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TOK = CharTokenizer("abcdefgh")


def tiny() -> DecoderLM:
    return DecoderLM(TransformerConfig(family="decoder", vocab_size=8, d_model=16, n_heads=2, n_layers=1, d_ff=32,
                                       max_len=16))


@pytest.fixture
def place(tmp_path):
    """A corpus, a file where a folder is expected, a checkpoint, a run without optimizer state."""
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat.\n" * 50)
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "holds_tsv").mkdir()
    (tmp_path / "holds_tsv" / "train.tsv").write_text("my own\tpairs\n")
    (tmp_path / "holds_tsv" / "web.txt").write_text("my own text\n")
    save_checkpoint(tmp_path / "ckpt", tiny(), TOK)
    saved = asdict(TrainConfig(data=str(tmp_path / "corpus.txt"), out=str(tmp_path / "noopt")))
    save_checkpoint(tmp_path / "noopt" / "last", tiny(), TOK, TrainingState(info={"step": 1, "train_config": saved}))
    huge = tmp_path / "huge"
    save_checkpoint(huge, tiny(), TOK)
    cfg = json.loads((huge / "config.json").read_text())
    (huge / "config.json").write_text(json.dumps({**cfg, "vocab_size": 10_000_000_000}))
    save_checkpoint(tmp_path / "listcfg", tiny(), TOK)
    (tmp_path / "listcfg" / "config.json").write_text(json.dumps([cfg]))
    return tmp_path


T = ["train", "--data", "{p}/corpus.txt", "--out", "{p}/run"]
G = ["generate", "hi", "--checkpoint", "{p}/ckpt", "-n", "2"]

CASES = [
    # (arguments, exit status, words the one line must hold)
    ([*T, "--threads", "-1"], 2, "'--threads': must be an integer in [0, 1024], got -1"),
    ([*G, "--threads", "-1"], 2, "'--threads'"),
    ([*G, "--top-probs", "-1"], 2, "'--top-probs': must be an integer in [0, 1000]"),
    ([*G, "--temperature", "nan"], 2, "'--temperature': must be a number in [0, inf), got nan"),
    ([*G, "--temperature", "-1"], 2, "'--temperature'"),
    ([*G, "--top-p", "0"], 2, "'--top-p': must be a number in (0, 1]"),
    ([*G, "--top-p", "inf"], 2, "'--top-p'"),
    ([*G, "--top-k", "-1"], 2, "'--top-k': must be an integer in [0, "),
    ([*G, "-n", "-1"], 2, "must be an integer in [1, 1000000]"),
    ([*G, "--seed", "-1"], 2, "'--seed': must be an integer in [0, 9223372036854775807]"),
    ([*G, "--seed", str(2**64)], 2, "'--seed'"),
    (["translate", "Hi", "--beam", "0"], 2, "'--beam': must be an integer in [1, 64], got 0"),
    (["translate", "Hi\udcff"], 2, "argument 2 is not valid UTF-8 text (byte 0xff"),
    (["train", "--data", "{p}/corpus.txt", "--out", "{p}/file"], 2, "is a file"),
    ([*T, "--batch-size", "10000000"], 2, "'--batch-size': must be an integer in [1, 65536]"),
    ([*T, "--bpe-vocab-size", "1000000000"], 2, "'--bpe-vocab-size': must be an integer in [256, 262144]"),
    ([*G[:2], "--checkpoint", "{p}/huge"], 1, "checked before allocating"),
    (["bleu", "--data", "{p}/corpus.txt", "--out", "{p}/missing/bleu.json"], 2, "missing does not exist"),
    (["bleu", "--data", "{p}/corpus.txt", "--out", "{p}"], 2, "is a folder"),
    (["bleu", "--data", "{p}/corpus.txt", "--out", "{p}/corpus.txt"], 2, "corpus.txt exists and was not written"),
    (["corpus", "{p}/holds_tsv"], 2, "already holds train.tsv"),
    (["corpus", "{p}/holds_tsv", "--text"], 2, "already holds web.txt"),
    (["serve", "--port", "99999"], 2, "'--port': must be an integer in [1, 65535], got 99999"),
    (["serve", "--device", "cuda:99"], 2, "--device cuda:99: "),  # no CUDA build, no GPU, or no GPU 99
    (["serve", "--device", "tpu"], 2, "unknown device 'tpu'; choose auto"),
    (["experiment", "positions", "--out", "{p}/file/x"], 2, "is a file, not a folder"),
    (["corpus", "{p}/file"], 2, "is a file, not a folder"),
    (["train", "--out", "{p}/noopt", "--resume"], 1, "holds no optimizer state"),
    ([*T, "--grad-clip", "-1"], 2, "'--grad-clip': must be a number in [0, 1e+06], got -1"),
    ([*T, "--snapshots", "-1,0"], 2, "each snapshot step must be an integer in [0, 2000], got -1"),
    ([*T, "--snapshots", "5,x"], 2, "'x' is not an integer step"),
    ([*T, "--eval-iters", "1000000000"], 2, "'--eval-iters': must be an integer in [1, 10000]"),
    ([*T, "--iters", str(10**30)], 2, "'--iters': must be an integer in [1, 1000000000]"),
    ([*T, "--lr", "nan"], 2, "'--lr': must be a number in (0, 10], got nan"),
    ([*T, "--lr", "1e400"], 2, "'--lr': must be a number in (0, 10], got inf"),
    ([*T, "--iters", "abc"], 2, "'--iters'"),
    ([*T, "--nosuch"], 2, "No such option"),
    ([*T, "--lr", "1e-3", "--min-lr", "1e-2"], 2, "min_lr must be at most lr"),
    ([*T, "--task", "mlm", "--tokenizer", "char"], 2, "needs special tokens"),
    ([*T, "--task", "nope"], 2, "'--task': unknown value 'nope'; choose one of: lm, mlm, classification, translation"),
    ([*T, "--beta2", "1"], 2, "'--beta2': must be a number in [0, 1)"),
    ([*T, "--optimizer", "sgd"], 2, "'--optimizer': unknown value 'sgd'; choose one of: adamw, muon"),
    ([*T, "--optimizer", "muon", "--strategy", "fsdp"], 2, "optimizer muon does not run under strategy fsdp"),
    ([*T, "--set", "posit=rotary"], 2, "--set: unknown config key(s): 'posit' (did you mean 'positions'?)"),
    ([*T, "--set", "rotary"], 2, "--set 'rotary': expected FIELD=VALUE, e.g. positions=rotary"),
    ([*T, "--set", "activation=swish"], 2, "--set: activation='swish' is not one of"),
    ([*T, "--set", "vocab_size=3"], 2, "--set vocab_size: set by the tokenizer and the task, not replaceable"),
    ([*T, "--set", "n_heads=3"], 2, "--set: d_model (128) must be divisible by n_heads (3)"),
    (["bleu", "--data", "{p}/corpus.txt", "--limit", "-1"], 2, "'--limit': must be an integer in [0, "),
    (["train", "--out", "{p}/run"], 2, "Missing option '--data'"),
    (["train", "--data", "{p}/missing.txt", "--out", "{p}/noopt", "--resume"], 1, "no such file or folder"),
    (["train", "--out", "{p}/run", "--resume"], 2, "no run to resume"),
    (["train", "--data", "{p}/missing.txt", "--out", "{p}/run"], 1, "missing.txt: no such file or folder"),
    (["export", "{p}/ckpt", "{p}/ckpt"], 2, "the destination is the source"),
    (["export", "{p}/ckpt", "{p}/file"], 2, "is a file"),
    ([*G[:2], "--checkpoint", "{p}/listcfg"], 1, "listcfg/config.json: expected a JSON object of config fields, found list"),
    (["export", "{p}/listcfg", "{p}/x"], 1, "config.json: expected a JSON object of config fields, found list"),
    ([*T, "--set", "d_model=100000"], 2, "the model has about 160,423,400,000 parameters, 2,566.8 GB with their "
                                         "gradients and AdamW moments in float32, more than the "),
    ([*T, "--set", "d_model=100000"], 2, " GB of memory here; try --set d_model="),
    (["export", "{p}/ckpt", "{p}/noopt/last"], 2, "resumable checkpoint"),
    (["export", "{p}/noopt/last", "{p}/noopt/last/exp"], 2, "noopt/last/exp is inside the checkpoint {p}/noopt/last"),
    (["export", "{p}/ckpt", "{p}/ckpt/a/b"], 2, "is inside the checkpoint {p}/ckpt,"),
    (["export", "{p}/ckpt", "{p}/noopt/data/exp"], 2, "is inside {p}/noopt/data, which its training run replaces"),
    (["export", "{p}/ckpt", "{p}/x", "--dtype", "int8"], 2, "'--dtype': unknown value 'int8'; choose one of: bfloat16, float16, float32"),
    (["bench", "--bf16", "maybe"], 2, "'--bf16': unknown value 'maybe'; choose one of: auto, on, off"),
    (["nosuchcommand"], 2, "No such command"),
]


@pytest.mark.parametrize(("args", "status", "words"), CASES, ids=[" ".join(c[0]).replace("{p}/", "") for c in CASES])
def test_each_mistake_is_one_line_with_the_right_status(place, capsys, args, status, words) -> None:
    before = sorted(p.relative_to(place).as_posix() for p in place.rglob("*"))
    code = main([a.replace("{p}", str(place)) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == status, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert words.replace("{p}", str(place)) in lines[0], lines[0]
    assert sorted(p.relative_to(place).as_posix() for p in place.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("args", [[*G, "--temperature", "1e-38"], [*G, "--top-p", "1e-50"]])
def test_tiny_sampling_values_never_give_a_traceback(place, capsys, args) -> None:
    """Any positive temperature or top-p is in range (issue 13: they behave like their limit, greedy);
    whatever the library does with them, the command line answers in at most one error line."""
    code = main([a.replace("{p}", str(place)) for a in args])
    err = capsys.readouterr().err
    assert code in (0, 1) and "Traceback" not in err and len(err.strip().splitlines()) <= 1, err


def run_cli(args: list[str], **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env}
    return subprocess.run([sys.executable, "-m", "attnlab", *args], capture_output=True, env=environ, timeout=300)


def test_the_real_command_line_one_line_and_debug_traceback(tmp_path) -> None:
    bad = run_cli(["translate", b"Hi\xff".decode("utf-8", "surrogateescape")])
    assert bad.returncode == 2 and bad.stderr.decode().strip().startswith("error: argument 2 is not valid UTF-8")
    missing = ["train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "run")]
    quiet = run_cli(missing)
    assert quiet.returncode == 1 and len(quiet.stderr.decode().strip().splitlines()) == 1
    assert b"Traceback" not in quiet.stderr
    loud = run_cli(missing, ATTNLAB_DEBUG="1")
    assert loud.returncode == 1 and b"Traceback" in loud.stderr and b"no such file or folder" in loud.stderr


def test_resume_from_the_command_line_keeps_the_run_options_and_refuses_changes(tmp_path, capsys) -> None:
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat. " * 300)
    out = str(tmp_path / "run")
    first = ["train", "--data", str(tmp_path / "corpus.txt"), "--out", out, "--iters", "2", "--eval-interval", "2",
             "--eval-iters", "1", "--batch-size", "2", "--lr", "2e-3", "--no-progress"]
    assert main(first) == 0, capsys.readouterr().err
    assert main(first) == 2 and "already holds a training run" in capsys.readouterr().err
    # options not given keep the run's own (--data, --lr, --batch-size ...); only the length changes
    assert main(["train", "--out", out, "--resume", "--iters", "3", "--no-progress"]) == 0, capsys.readouterr().err
    assert "finished at step 3" in capsys.readouterr().out
    assert main(["train", "--out", out, "--resume", "--iters", "4", "--lr", "1e-3", "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "lr: saved 0.002, now 0.001" in err and "seed: saved 1337, now 5" in err
    assert main(["train", "--data", str(tmp_path / "corpus.txt"), "--out", out, "--iters", "2", "--overwrite",
                 "--no-progress", "--eval-iters", "1", "--batch-size", "2"]) == 0


def test_optimizer_muon_from_the_command_line_trains_and_resume_keeps_it(tmp_path, capsys) -> None:
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat. " * 300)
    out = str(tmp_path / "run")
    assert main(["train", "--data", str(tmp_path / "corpus.txt"), "--out", out, "--optimizer", "muon", "--iters", "2",
                 "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2", "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert main(["train", "--out", out, "--resume", "--iters", "3", "--no-progress"]) == 0, capsys.readouterr().err
    assert main(["train", "--out", out, "--resume", "--iters", "4", "--optimizer", "adamw"]) == 2
    assert "optimizer: saved 'muon', now 'adamw'" in capsys.readouterr().err


def test_set_replaces_model_fields_and_resume_keeps_them(tmp_path, capsys) -> None:
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat. " * 300)
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "corpus.txt"), "--out", str(out), "--set", "positions=rotary",
                 "--set", "activation=relu", "--set", "d_ff=256", "--iters", "2", "--eval-interval", "2",
                 "--eval-iters", "1", "--batch-size", "2", "--no-progress"]) == 0, capsys.readouterr().err
    config = json.loads((out / "last" / "config.json").read_text())
    assert (config["positions"], config["activation"], config["d_ff"]) == ("rotary", "relu", 256)
    assert config["d_model"] == 128 and config["n_layers"] == 4  # the rest is the preset's
    assert main(["train", "--out", str(out), "--resume", "--iters", "3", "--no-progress"]) == 0, capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--iters", "4", "--set", "activation=gelu"]) == 2
    assert "model_overrides: saved" in capsys.readouterr().err


def test_train_options_are_generated_from_train_config() -> None:
    """Issue 15: each train option's default, help and range live once, on TrainConfig's fields."""
    from dataclasses import MISSING, fields

    import typer

    from attnlab.cli import app
    from attnlab.train.tasks import TASKS

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    options = {p.name: p for p in command.params}
    for f in fields(TrainConfig):
        if not f.metadata["cli"]:
            assert f.name not in options
            continue
        assert f.name in options, f.name
        assert f.metadata["help"] in (options[f.name].help or ""), f.name
        if f.default is not MISSING and f.name != "snapshots":
            assert options[f.name].default == f.default, f.name
        if f.type in ("int", "float", "int | None") and f.name != "snapshots":
            assert f.metadata["range"] is not None, f"{f.name} has no allowed range"
            assert f.metadata["range"].text() in options[f.name].help, f.name
    assert set(options) - {f.name for f in fields(TrainConfig)} == {"ctx", "threads"} - {"ctx"}
    assert set(TASKS) == set(fields(TrainConfig)[2].metadata["choices"])
    parsed = command.make_context("train", ["--out", "x", "--no-progress", "--precision", "bf16", "--decay-iters", "7"]).params
    assert parsed["progress"] is False and parsed["precision"] == "bf16" and parsed["decay_iters"] == 7
    assert command.make_context("train", ["--out", "x"]).params["progress"] is True


def test_export_into_an_empty_folder_is_accepted(place, capsys) -> None:
    """Issue 23 item 7: ``export SRC <empty folder>`` was refused although the folder held nothing."""
    from attnlab.weights.checkpoint import load_checkpoint

    (place / "empty").mkdir()
    assert main(["export", str(place / "ckpt"), str(place / "empty"), "--dtype", "float32"]) == 0, capsys.readouterr().err
    import torch

    loaded = load_checkpoint(place / "empty")
    torch.testing.assert_close(loaded.model.state_dict(), load_checkpoint(place / "ckpt").model.state_dict(),
                               rtol=0, atol=0)


def test_out_of_memory_from_a_large_batch_names_the_size_and_a_smaller_batch(place, capsys, monkeypatch) -> None:
    """Issue 23 item 7: ``--batch-size 65536`` ended in a raw RuntimeError with the allocator's text. The
    allocation fails here the way torch's CPU allocator fails (a real one would fill a shared machine)."""
    import attnlab.train.trainer as trainer

    def allocator_failure(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(trainer, "backward_step", allocator_failure)
    before = sorted(p.relative_to(place).as_posix() for p in place.rglob("*"))
    code = main([a.replace("{p}", str(place)) for a in [*T, "--batch-size", "65536", "--iters", "2", "--no-progress"]])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("attnlab train: device")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: out of memory: the run asked for 68.7 GB in one allocation, and this machine "
                               "has "), lines[0]
    assert "(--batch-size 65536); try --batch-size " in lines[0] and "DefaultCPUAllocator" not in lines[0]
    batch, accum = (int(x) for x in re.search(r"try --batch-size (\d+) --accum (\d+)", lines[0]).groups())
    assert 1 <= batch <= 65536 // 2 and batch * accum == 65536, lines[0]  # the same sequences per step
    assert f"({batch * accum:,} sequences per step; the run had 65,536)" in lines[0]
    assert sorted(p.relative_to(place).as_posix() for p in place.rglob("*")) == before
