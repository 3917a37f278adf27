"""The training loop end to end on a tiny model and a small generated corpus (no ../shared)."""

from __future__ import annotations

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


def test_interrupt_then_resume_is_bitwise_identical(corpus, monkeypatch) -> None:
    full = train(config(corpus, "full"))
    real_loss, calls = LanguageModelTask.loss, {"n": 0}

    def ctrl_c_during_step_6(self, model, batch, *, training):
        if training:
            calls["n"] += 1
            if calls["n"] == 6:
                signal.raise_signal(signal.SIGINT)  # what a user's Ctrl-C does
        return real_loss(self, model, batch, training=training)

    monkeypatch.setattr(LanguageModelTask, "loss", ctrl_c_during_step_6)
    first = train(config(corpus, "split"))
    assert first.stopped == "interrupted" and first.step == 6
    monkeypatch.setattr(LanguageModelTask, "loss", real_loss)
    second = train(config(corpus, "split", resume=True))
    assert second.step == 12
    assert first.losses + second.losses == full.losses  # exact float equality, step by step
    assert second.val_losses == {k: v for k, v in full.val_losses.items() if k > 6}
    rows = read_metrics(corpus / "split" / "metrics.jsonl")
    assert [r["loss"] for r in rows if "loss" in r] == full.losses
    a, b = load_checkpoint(corpus / "full" / "last").model, load_checkpoint(corpus / "split" / "last").model
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


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
    result = train(config(corpus, "bf16", bf16=True, accum=2, iters=8))
    assert result.step == 8 and all(math.isfinite(v) for v in result.losses)
    info = json.loads((corpus / "bf16" / "last" / "training" / "state.json").read_text())["info"]
    assert info["train_config"]["bf16"] is True


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
    assert gen.output.startswith("the cat") and len(gen.output) >= len("the cat") + 12
    bad = runner.invoke(app, ["generate", "QQ", "--checkpoint", str(out / "best")])
    assert bad.exit_code == 1 and "'Q' (U+0051) at position 0" in bad.output
    missing = runner.invoke(app, ["train", "--data", str(corpus / "nope.txt"), "--out", str(corpus / "cli2")])
    assert missing.exit_code == 1 and "no such file or folder" in missing.output
