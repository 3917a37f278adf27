"""The training loop end to end on a tiny model and a small generated corpus (no ../shared)."""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal

import pytest
import torch

from attnlab.train.loop import TrainConfig, TrainingDiverged, read_metrics, train
from attnlab.train.tasks import LanguageModelTask
from attnlab.weights.checkpoint import load_checkpoint, load_training_state

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 16}


def make_corpus(path, n_lines: int = 300) -> None:
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "its", "bed"]
    path.write_text("".join(" ".join(rng.choice(words) for _ in range(8)) + ".\n" for _ in range(n_lines)))


def config(tmp_path, out: str, **changes) -> TrainConfig:
    base = dict(data=str(tmp_path / "corpus.txt"), out=str(tmp_path / out), model_overrides=TINY, iters=12,
                batch_size=4, warmup=3, eval_interval=4, eval_iters=2, progress=False, lr=3e-3)
    return TrainConfig(**{**base, **changes})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def corpus(tmp_path):
    make_corpus(tmp_path / "corpus.txt")
    return tmp_path


@pytest.mark.slow
def test_train_writes_checkpoints_metrics_and_plot(corpus) -> None:
    result = train(config(corpus, "run", iters=40, eval_interval=20, snapshots=(0, 20)))
    out = result.out
    assert result.step == 40 and result.stopped == "done"
    vocab = load_checkpoint(out / "last").config.vocab_size
    assert abs(result.losses[0] - math.log(vocab)) < 0.3  # GPT-2 init: the first guess is near uniform
    assert result.losses[-1] < result.losses[0] - 0.5  # it learns
    for d in ("last", "best", "snapshots/step-000000", "snapshots/step-000020"):
        assert (out / d / "model.safetensors").is_file(), d
    assert (out / "loss.png").stat().st_size > 1000
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 41))
    assert {r["step"] for r in rows if "val_loss" in r} == {20, 40}
    assert load_training_state(out / "last").info["step"] == 40
    best = load_checkpoint(out / "best")
    assert best.config.d_model == 32 and best.tokenizer.decode(best.tokenizer.encode("the cat")) == "the cat"


@pytest.mark.precision  # auto precision: run again by `make test` with the probe forced to bf16
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_interrupt_then_resume_is_bitwise_identical(corpus, monkeypatch, optimizer) -> None:
    full = train(config(corpus, "full", optimizer=optimizer))
    real_loss, calls = LanguageModelTask.loss, {"n": 0}

    def ctrl_c_during_step_6(self, model, batch, *, training):
        if training:
            calls["n"] += 1
            if calls["n"] == 6:
                signal.raise_signal(signal.SIGINT)  # what a user's Ctrl-C does
        return real_loss(self, model, batch, training=training)

    monkeypatch.setattr(LanguageModelTask, "loss", ctrl_c_during_step_6)
    first = train(config(corpus, "split", optimizer=optimizer))
    assert first.stopped == "interrupted" and first.step == 6
    monkeypatch.setattr(LanguageModelTask, "loss", real_loss)
    second = train(config(corpus, "split", resume=True, optimizer=optimizer))
    assert second.step == 12
    assert first.losses + second.losses == full.losses  # exact float equality, step by step
    assert second.val_losses == {k: v for k, v in full.val_losses.items() if k > 6}
    rows = read_metrics(corpus / "split" / "metrics.jsonl")
    assert [r["loss"] for r in rows if "loss" in r] == full.losses
    a, b = load_checkpoint(corpus / "full" / "last").model, load_checkpoint(corpus / "split" / "last").model
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_muon_lowers_the_loss_like_adamw(corpus) -> None:
    """``--optimizer muon`` on the one --lr and schedule: a short run learns about as fast as AdamW."""
    runs = {opt: train(config(corpus, opt, optimizer=opt, iters=30, eval_interval=30)) for opt in ("adamw", "muon")}
    for opt, result in runs.items():
        assert sum(result.losses[-5:]) / 5 < result.losses[0] - 0.3, (opt, result.losses)
    assert runs["muon"].val_losses[30] < runs["adamw"].val_losses[30] + 0.1
    assert load_training_state(corpus / "muon" / "last").info["train_config"]["optimizer"] == "muon"


def test_nan_loss_stops_and_keeps_last_good_checkpoint(corpus, monkeypatch) -> None:
    real_loss, calls = LanguageModelTask.loss, {"n": 0}

    def nan_at_step_7(self, model, batch, *, training):
        loss = real_loss(self, model, batch, training=training)
        if training:
            calls["n"] += 1
            if calls["n"] == 7:
                return loss._replace(total=loss.total * math.nan)  # Task.loss gives (sum, count)
        return loss

    monkeypatch.setattr(LanguageModelTask, "loss", nan_at_step_7)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 7.*last good checkpoint"):
        train(config(corpus, "nan"))
    assert load_training_state(corpus / "nan" / "last").info["step"] == 4  # the eval-time save before it
    load_checkpoint(corpus / "nan" / "last")


def test_bf16_autocast_and_accumulation_train(corpus) -> None:
    result = train(config(corpus, "bf16", precision="bf16", accum=2, iters=8))
    assert result.step == 8 and all(math.isfinite(v) for v in result.losses)
    info = json.loads((corpus / "bf16" / "last" / "training" / "state.json").read_text())["info"]
    assert info["train_config"]["precision"] == "bf16"
    assert info["precision"] == {"name": "bf16", "reason": "asked for (--precision bf16)"} and info["device"] == "cpu"


def test_bf16_loss_trajectory_stays_within_one_percent_of_fp32(corpus) -> None:
    """Issue 16: bf16 autocast trains the same model: over 20 steps every loss is within 1% of fp32's."""
    fp32 = train(config(corpus, "fp32", precision="fp32", iters=20, eval_interval=20)).losses
    bf16 = train(config(corpus, "bf16-20", precision="bf16", iters=20, eval_interval=20)).losses
    assert len(fp32) == len(bf16) == 20 and fp32[-1] < fp32[0] - 0.2  # it learns
    for a, b in zip(fp32, bf16, strict=True):
        assert abs(a - b) <= 0.01 * a, (a, b)
    assert fp32 != bf16  # the autocast did change the arithmetic


@pytest.mark.precision  # auto precision: run again by `make test` with the probe forced to bf16
def test_the_first_line_says_which_device_precision_and_threads_and_why(corpus, capfd) -> None:
    train(config(corpus, "said", device="cpu", precision="auto", iters=1, eval_interval=1), threads=1)
    line = capfd.readouterr().err.strip().splitlines()[0]
    assert line.startswith("attnlab train: device cpu; precision ") and "threads 1 (asked for" in line, line
    info = json.loads((corpus / "said" / "last" / "training" / "state.json").read_text())["info"]
    assert info["precision"]["name"] in ("fp32", "bf16") and info["precision"]["reason"] in line


def test_a_seeded_run_is_the_same_with_an_empty_or_a_warm_probe_cache(corpus, monkeypatch, capfd) -> None:
    """``--precision auto`` measures the model's step on a machine's first run and reads the cache on
    later ones; the measurement used to draw from the global generator (the first run's dropout masks
    differed: another step-1 loss for the same --seed). Now both runs are equal, to the bit."""
    monkeypatch.delenv("ATTNLAB_BF16_PROBE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(corpus / "empty-cache"))
    dropout = {**TINY, "dropout": 0.2}
    cold = train(config(corpus, "cold", iters=2, eval_interval=2, model_overrides=dropout), threads=1)
    assert (corpus / "empty-cache" / "attnlab" / "precision.json").is_file()
    warm = train(config(corpus, "warm", iters=2, eval_interval=2, model_overrides=dropout), threads=1)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("attnlab train:")]
    assert "training step" in lines[0] and "(measured)" in lines[0] and "(measured, cached)" in lines[1], lines
    assert cold.losses == warm.losses


def test_the_precision_probe_leaves_the_model_and_the_data_order_as_they_were(corpus) -> None:
    """The training step auto times is the model's own (its configuration and batch shape are the
    cache key); afterwards the weights, gradients and mode and the task's sampler are as before, so
    the run's first batch is the one it would have had."""
    from attnlab.models import build_model, preset
    from attnlab.train import distributed
    from attnlab.train.loop import make_task_for, train_tokenizer, training_workload

    cfg = config(corpus, "probe", model_overrides={**TINY, "dropout": 0.2})
    env = distributed.DistEnv()

    def prepared():
        task = make_task_for(cfg)
        tokenizer = train_tokenizer(cfg, task)
        model_config = task.configure(preset(cfg.preset).replace(**cfg.model_overrides), tokenizer)
        task.prepare(tokenizer, model_config, corpus / "probe-data", env, reuse=True)
        return task, model_config

    task, model_config = prepared()
    model = build_model(model_config).eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    work = training_workload(model, task, env)
    for autocast in (contextlib.nullcontext(), torch.autocast("cpu", dtype=torch.bfloat16)):
        work.step(autocast)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert work.what == "training step" and str(model_config.to_dict()) in work.key
    assert f"[{(cfg.batch_size, model_config.max_len)}]" in work.key
    untouched, _ = prepared()
    assert torch.equal(task.next_batch().inputs[0], untouched.next_batch().inputs[0])


def test_corpus_shorter_than_a_block_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "corpus.txt").write_text("tiny text\n" * 2)
    with pytest.raises(ValueError, match="fewer than one block"):
        train(config(tmp_path, "short"))


@pytest.mark.slow
def test_cli_train_then_generate(corpus) -> None:
    from typer.testing import CliRunner

    from attnlab.cli import app

    runner = CliRunner()
    out = corpus / "cli"
    result = runner.invoke(app, ["train", "--data", str(corpus / "corpus.txt"), "--out", str(out), "--iters", "3",
                                 "--eval-interval", "3", "--eval-iters", "1", "--batch-size", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "finished at step 3" in result.output
    gen = runner.invoke(app, ["generate", "the cat", "--checkpoint", str(out / "best"), "-n", "12", "--seed", "0"])
    assert gen.exit_code == 0, gen.output
    assert gen.stdout.startswith("the cat") and len(gen.stdout) >= len("the cat") + 12
    assert gen.stderr.startswith("attnlab: device cpu; threads ")  # what it chose, beside the text
    bad = runner.invoke(app, ["generate", "QQ", "--checkpoint", str(out / "best")])
    assert bad.exit_code == 1 and "'Q' (U+0051) at position 0" in bad.output
    missing = runner.invoke(app, ["train", "--data", str(corpus / "nope.txt"), "--out", str(corpus / "cli2")])
    assert missing.exit_code == 1 and "no such file or folder" in missing.output


@pytest.mark.precision  # auto precision: run again by `make test` with the probe forced to bf16
def test_a_resumed_auto_run_keeps_its_precision_even_from_before_the_option(corpus, capfd) -> None:
    """--precision may not change on --resume; auto keeps what the run started with, and a run saved with
    the former ``bf16: true`` field resumes in bf16."""
    train(config(corpus, "old", precision="bf16", iters=2, eval_interval=2))
    state = corpus / "old" / "last" / "training" / "state.json"
    meta = json.loads(state.read_text())
    del meta["info"]["precision"], meta["info"]["train_config"]["precision"]
    meta["info"]["train_config"]["bf16"] = True  # as a run of the previous version recorded it
    state.write_text(json.dumps(meta))
    capfd.readouterr()
    train(config(corpus, "old", iters=3, eval_interval=2, resume=True))
    line = capfd.readouterr().err.strip().splitlines()[0]
    assert "precision bf16 (kept from the run's start: the run was started with bf16=True)" in line, line
