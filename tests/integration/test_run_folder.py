"""A run folder belongs to one run (issue 14, items 2-4 and 6): a fresh run never overwrites a run,
a failed run leaves the folder byte for byte as it was, --resume refuses a changed run by name, and
an extended run's learning rate continues without a jump."""

from __future__ import annotations

import math
import signal

import pytest
from test_train import config, make_corpus

from attnlab.train.data import DataError
from attnlab.train.loop import TrainingDiverged, read_metrics, train
from attnlab.train.runs import RunFolderError
from attnlab.train.tasks import LanguageModelTask

pytestmark = pytest.mark.usefixtures("one_thread")


def tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def corpus(tmp_path):
    make_corpus(tmp_path / "corpus.txt")
    return tmp_path


def interrupt_at(monkeypatch, n: int) -> None:
    real_loss, calls = LanguageModelTask.loss, {"n": 0}

    def ctrl_c(self, model, batch, *, training):
        if training:
            calls["n"] += 1
            if calls["n"] == n:
                signal.raise_signal(signal.SIGINT)
        return real_loss(self, model, batch, training=training)

    monkeypatch.setattr(LanguageModelTask, "loss", ctrl_c)


def nan_at(monkeypatch, n: int) -> None:
    real_loss, calls = LanguageModelTask.loss, {"n": 0}

    def nan(self, model, batch, *, training):
        loss = real_loss(self, model, batch, training=training)
        if training:
            calls["n"] += 1
            if calls["n"] == n:
                return loss._replace(total=loss.total * math.nan)  # Task.loss gives (sum, count)
        return loss

    monkeypatch.setattr(LanguageModelTask, "loss", nan)


@pytest.mark.precision  # auto precision: run again by `make test` with the probe forced to bf16
def test_failed_fresh_runs_leave_the_folder_as_it_was_and_the_run_resumes_bitwise(corpus, monkeypatch) -> None:
    full = train(config(corpus, "full"))
    interrupt_at(monkeypatch, 6)
    first = train(config(corpus, "run"))
    assert first.step == 6
    monkeypatch.undo()
    run = corpus / "run"
    before = tree(run)

    # forgetting --resume: refused, nothing touched
    with pytest.raises(RunFolderError, match=r"already holds a training run .*--resume.*--overwrite"):
        train(config(corpus, "run"))
    assert tree(run) == before
    # --overwrite with another corpus too short to train on: fails while preparing, nothing touched
    (corpus / "other.txt").write_text("zz top\n" * 3)
    with pytest.raises(DataError, match="fewer than one block"):
        train(config(corpus, "run", data=str(corpus / "other.txt"), overwrite=True))
    assert tree(run) == before
    # --overwrite with another corpus that diverges at step 2: before any checkpoint, so restored
    make_corpus(corpus / "other.txt", n_lines=200)
    nan_at(monkeypatch, 2)
    with pytest.raises(TrainingDiverged, match=r"No checkpoint had been written yet.*left as it was"):
        train(config(corpus, "run", data=str(corpus / "other.txt"), overwrite=True))
    monkeypatch.undo()
    assert tree(run) == before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []

    second = train(config(corpus, "run", resume=True))
    assert first.losses + second.losses == full.losses  # exact float equality, step by step


def test_a_failed_run_into_a_new_folder_leaves_no_folder(corpus, monkeypatch) -> None:
    nan_at(monkeypatch, 2)
    with pytest.raises(TrainingDiverged):
        train(config(corpus, "new"))
    assert not (corpus / "new").exists()


def test_overwrite_replaces_a_run_but_nothing_else(corpus) -> None:
    train(config(corpus, "run", iters=4))
    (corpus / "run" / "notes.txt").write_text("mine")
    result = train(config(corpus, "run", iters=4, seed=7, overwrite=True))
    assert result.step == 4 and (corpus / "run" / "notes.txt").read_text() == "mine"
    assert [r["step"] for r in read_metrics(corpus / "run" / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4]
    assert sorted(p.name for p in (corpus / "run").iterdir() if p.name.startswith(".")) == []
    (corpus / "run" / "data" / "thesis.tex").write_text("not a run's")
    with pytest.raises(RunFolderError, match=r"data is not"):
        train(config(corpus, "run", iters=4, overwrite=True))
    (corpus / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        train(config(corpus, "file"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("resume")
    make_corpus(root / "corpus.txt")
    make_corpus(root / "other.txt", n_lines=299)
    train(config(root, "run", iters=4, eval_interval=4))
    return root


@pytest.mark.parametrize(("changes", "field"), [
    ({"lr": 2e-3}, "lr"),
    ({"batch_size": 2}, "batch_size"),
    ({"warmup": 1}, "warmup"),
    ({"seed": 1}, "seed"),
    ({"preset": "bert-tiny"}, "preset"),
    ({"tokenizer": "bpe"}, "tokenizer"),
    ({"task": "mlm", "tokenizer": "bpe"}, "task"),
    ({"grad_clip": 0.5}, "grad_clip"),
    ({"precision": "bf16"}, "precision"),  # it changes the numbers; the device may change (below)
    ({"optimizer": "muon"}, "optimizer"),
])
def test_resume_refuses_each_changed_field_by_name_with_both_values(finished_run, changes, field) -> None:
    before = tree(finished_run / "run")
    with pytest.raises(RunFolderError, match=rf"--resume would change the run .*{field}: saved "):
        train(config(finished_run, "run", iters=8, resume=True, **changes))
    assert tree(finished_run / "run") == before


def test_resume_refuses_other_data_and_missing_data(finished_run) -> None:
    with pytest.raises(RunFolderError, match=r"data: the content of .*other\.txt.* differs"):
        train(config(finished_run, "run", iters=8, resume=True, data=str(finished_run / "other.txt")))
    with pytest.raises(DataError, match="no such file or folder"):
        train(config(finished_run, "run", iters=8, resume=True, data=str(finished_run / "missing.txt")))


def test_extending_a_finished_run_continues_the_learning_rate_without_a_jump(corpus) -> None:
    train(config(corpus, "run", iters=8, warmup=2, eval_interval=4))
    train(config(corpus, "run", iters=14, warmup=2, eval_interval=4, resume=True))
    lrs = {r["step"]: r["lr"] for r in read_metrics(corpus / "run" / "metrics.jsonl") if "loss" in r}
    assert sorted(lrs) == list(range(1, 15))
    cfg = config(corpus, "x")
    largest_original_step = max(abs(lrs[s + 1] - lrs[s]) for s in range(3, 8))
    assert lrs[9] <= lrs[8]  # never back up
    assert lrs[8] - lrs[9] <= largest_original_step  # no larger than a step of the original decay
    assert all(lrs[s] == cfg.min_lr for s in range(9, 15))  # the documented rule: flat at min_lr


def test_resume_survives_a_cut_metrics_line_and_truncated_tokens(corpus, monkeypatch) -> None:
    full = train(config(corpus, "full"))
    interrupt_at(monkeypatch, 6)
    first = train(config(corpus, "run"))
    monkeypatch.undo()
    run = corpus / "run"
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # killed while writing a row
    tokens = run / "data" / "tokens.npy"
    tokens.write_bytes(tokens.read_bytes()[:200])  # and the prepared tokens cut short
    second = train(config(corpus, "run", resume=True))
    assert first.losses + second.losses == full.losses
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == list(range(1, 13))


def test_a_run_set_aside_by_a_killed_overwrite_is_never_deleted(corpus) -> None:
    import subprocess
    import sys

    train(config(corpus, "run", iters=4))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = corpus / "run" / f".previous-run-{dead.pid}"
    aside.mkdir()
    (aside / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunFolderError, match=r"previous-run-\d+ holds a run set aside .* move its contents back"):
        train(config(corpus, "run", iters=8, resume=True))
    assert (aside / "metrics.jsonl").is_file()


def test_resume_refuses_a_linked_or_foreign_run_entry_before_any_step(corpus) -> None:
    """Issue 23 item 6: ``last`` as a symbolic link trained 10 steps and appended metrics before its
    first save refused the link; now the resume is refused before any work, and nothing changes."""
    import os

    train(config(corpus, "run", iters=4, eval_interval=4))
    run = corpus / "run"
    os.replace(run / "last", corpus / "elsewhere")
    os.symlink(corpus / "elsewhere", run / "last")
    before = tree(run)
    with pytest.raises(RunFolderError, match=r"run/last is a symbolic link"):
        train(config(corpus, "run", iters=8, eval_interval=4, resume=True))
    assert tree(run) == before
    os.unlink(run / "last")
    os.replace(corpus / "elsewhere", run / "last")
    (run / "best").rename(corpus / "best-kept")
    (run / "best").mkdir()
    (run / "best" / "notes.txt").write_text("mine")  # a folder of the user's where the run saves `best`
    before = tree(run)
    with pytest.raises(RunFolderError, match=r"run/best is not what a run wrote"):
        train(config(corpus, "run", iters=8, eval_interval=4, resume=True))
    assert tree(run) == before


def test_the_precision_reason_is_stored_once_across_resumes(corpus, capsys) -> None:
    """Issue 23 item 7: the reason grew by "kept from the run's start:" on every resume."""
    import json

    def reason() -> str:
        return json.loads((corpus / "run" / "last" / "training" / "state.json").read_text())["info"]["precision"]["reason"]

    train(config(corpus, "run", iters=2, eval_interval=2))
    first = reason()
    assert first and not first.startswith("kept from")
    capsys.readouterr()
    for iters in (4, 6):
        train(config(corpus, "run", iters=iters, eval_interval=2, resume=True))
        assert reason() == first
        line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("attnlab train:"))
        assert f"(kept from the run's start: {first});" in line and line.count("kept from") == 1, line
    state = corpus / "run" / "last" / "training" / "state.json"  # a run saved by the old code: repaired
    meta = json.loads(state.read_text())
    meta["info"]["precision"]["reason"] = "kept from the run's start: kept from the run's start: " + first
    state.write_text(json.dumps(meta))
    train(config(corpus, "run", iters=8, eval_interval=2, resume=True))
    assert reason() == first
