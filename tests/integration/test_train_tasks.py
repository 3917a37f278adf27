"""The non-LM training tasks end to end: MLM, classification and translation on tiny generated data."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.models import EncoderDecoder, EncoderForClassification, EncoderForMaskedLM
from attnlab.train.data import DataError
from attnlab.train.examples import LengthBucketSampler, read_pairs
from attnlab.train.loop import TrainConfig, train
from attnlab.translate import bleu_report, translate_text
from attnlab.weights.checkpoint import load_checkpoint

ENCODER = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 24}
SEQ2SEQ = {**ENCODER, "d_model": 64, "d_ff": 128, "n_decoder_layers": 2, "dropout": 0.0}
WORDS = ["sun", "moon", "star", "tree", "river", "stone", "bird", "fish", "wind", "rain"]
NUMBERS = {w: f"w{i}" for i, w in enumerate(WORDS)}  # a made-up "language": one token per word


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(tmp_path, task: str, data: str, out: str, **changes):
    base = dict(task=task, data=data, out=str(tmp_path / out), bpe_vocab_size=300, batch_size=16, iters=60,
                warmup=5, eval_interval=30, eval_iters=2, lr=3e-3, progress=False,
                precision="fp32")  # exact translations after training: the same arithmetic on every CPU
    return train(TrainConfig(**{**base, **changes}))


@pytest.fixture
def pairs_file(tmp_path):
    """'Translate' word by word into a made-up language: impossible without reading the source."""
    rng = random.Random(0)
    lines = []
    for _ in range(400):
        src = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
        lines.append(" ".join(src) + "\t" + " ".join(NUMBERS[w] for w in src) + "\n")
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(lines))
    return path


def test_translation_trains_translates_and_resumes_exactly(tmp_path, pairs_file) -> None:
    result = run(tmp_path, "translation", str(pairs_file), "tr", model_overrides=SEQ2SEQ, iters=150, eval_interval=75)
    first, last = result.val_losses[75], result.val_losses[150]
    assert last < first < 4.0, result.val_losses  # learned well below the ~5.7 nats of a uniform guess
    ckpt = load_checkpoint(tmp_path / "tr" / "best")
    assert isinstance(ckpt.model, EncoderDecoder) and ckpt.config.pad_token_id == ckpt.tokenizer.token_id("<pad>")
    out = translate_text(ckpt.model, ckpt.tokenizer, "sun moon river", beam_size=2)
    assert out.source_ids[-1] == ckpt.tokenizer.token_id("</s>")
    assert out.text.split() == ["w0", "w1", "w4"], out.text
    sources = ["sun moon river stone", "bird fish wind rain", "tree star sun moon bird"]
    references = [" ".join(NUMBERS[w] for w in s.split()) for s in sources]
    report = bleu_report(ckpt.model, ckpt.tokenizer, sources, references, beam_size=1, progress=False)
    assert report.bleu > 10 and report.copy_bleu == 0.0 and len(report.hypotheses) == 3, report

    # The same through the CLI, on a bf16 export of the checkpoint.
    cli = CliRunner()
    exported = tmp_path / "exported"
    assert cli.invoke(app, ["export", str(tmp_path / "tr" / "best"), str(exported)]).exit_code == 0
    assert (exported / "model.safetensors").stat().st_size < (tmp_path / "tr" / "best" / "model.safetensors").stat().st_size
    said = cli.invoke(app, ["translate", "sun moon river", "--checkpoint", str(exported), "--beam", "2"])
    assert said.exit_code == 0 and said.stdout.split() == out.text.split(), said.output
    scored = cli.invoke(app, ["bleu", "--checkpoint", str(exported), "--data", str(pairs_file), "--limit", "5",
                              "--beam", "1", "--out", str(tmp_path / "bleu.json")])
    assert scored.exit_code == 0 and "copying the source: 0.00" in scored.output, scored.output
    assert len(json.loads((tmp_path / "bleu.json").read_text())["translations"]) == 5
    wrong = cli.invoke(app, ["translate", "hello", "--model", "shakespeare-char"])
    assert wrong.exit_code == 1 and "not an encoder-decoder" in wrong.output

    # Interrupt-free resume check: 20 steps, then 20 more, equals 40 in one go (data position and RNG saved).
    whole = run(tmp_path, "translation", str(pairs_file), "whole", model_overrides=SEQ2SEQ, iters=40, eval_interval=20)
    run(tmp_path, "translation", str(pairs_file), "split", model_overrides=SEQ2SEQ, iters=20, eval_interval=20,
        decay_iters=40)
    rest = run(tmp_path, "translation", str(pairs_file), "split", model_overrides=SEQ2SEQ, iters=40, eval_interval=20,
               decay_iters=40, resume=True)
    assert rest.losses == whole.losses[20:]


def test_translation_from_two_aligned_files(tmp_path, pairs_file) -> None:
    rows = [line.split("\t") for line in pairs_file.read_text().splitlines()]
    (tmp_path / "src.txt").write_text("".join(s + "\n" for s, _ in rows))
    (tmp_path / "tgt.txt").write_text("".join(t + "\n" for _, t in rows))
    assert read_pairs(tmp_path / "src.txt", tmp_path / "tgt.txt") == read_pairs(pairs_file)
    (tmp_path / "short.txt").write_text("".join(t + "\n" for _, t in rows[:-1]))
    with pytest.raises(DataError, match=r"400 lines but .*399"):
        read_pairs(tmp_path / "src.txt", tmp_path / "short.txt")


def test_classification_learns_a_keyword_rule(tmp_path) -> None:
    rng = random.Random(1)
    lines = []
    for _ in range(300):
        words = [rng.choice(WORDS[2:]) for _ in range(4)]
        label = rng.choice(["sunny", "night"])
        words.insert(rng.randint(0, 4), "sun" if label == "sunny" else "moon")
        lines.append(f"{label}\t{' '.join(words)}\n")
    (tmp_path / "labels.tsv").write_text("".join(lines))
    result = run(tmp_path, "classification", str(tmp_path / "labels.tsv"), "cls", model_overrides=ENCODER,
                 iters=80, eval_interval=40)
    assert result.val_metrics[80]["val_accuracy"] >= 0.9, result.val_metrics
    ckpt = load_checkpoint(tmp_path / "cls" / "last")
    assert isinstance(ckpt.model, EncoderForClassification) and ckpt.config.class_names == ("night", "sunny")


def test_mlm_trains_an_encoder(tmp_path) -> None:
    rng = random.Random(2)
    (tmp_path / "text.txt").write_text("".join(" ".join(rng.choice(WORDS) for _ in range(10)) + ".\n"
                                               for _ in range(300)))
    result = run(tmp_path, "mlm", str(tmp_path / "text.txt"), "mlm", model_overrides=ENCODER)
    assert result.val_losses[60] < result.val_losses[30] < 6.0
    assert isinstance(load_checkpoint(tmp_path / "mlm" / "last").model, EncoderForMaskedLM)


def test_task_mistakes_are_clear(tmp_path, pairs_file) -> None:
    with pytest.raises(ValueError, match=r"needs special tokens.*--tokenizer bpe"):
        TrainConfig(task="translation", data=str(pairs_file), out=str(tmp_path / "x"), tokenizer="char")
    with pytest.raises(ValueError, match="translation task trains encoder-decoder models; preset 'shakespeare-char'"):
        run(tmp_path, "translation", str(pairs_file), "x", preset="shakespeare-char")
    with pytest.raises(ValueError, match="unknown task 'summarise'"):
        TrainConfig(task="summarise", data=str(pairs_file), out=str(tmp_path / "x"))
    (tmp_path / "bad.tsv").write_text("a\tb\nno tab here\n")
    with pytest.raises(DataError, match=r"bad.tsv, line 2: expected 'source<TAB>target'"):
        read_pairs(tmp_path / "bad.tsv")


def test_length_buckets_cover_every_example_once_per_epoch_and_resume() -> None:
    lengths = [random.Random(i).randint(1, 50) for i in range(103)]
    sampler = LengthBucketSampler(lengths, 10, seed=3, pool=3)
    epoch = [sampler.next() for _ in range(10)]  # 10 full batches; 3 examples wait for the next epoch
    seen = [int(i) for batch in epoch for i in batch]
    assert len(seen) == len(set(seen)) == 100
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in epoch]
    assert sum(spreads) / len(spreads) < 25  # sorted within pools: far less spread than random batches
    state = sampler.state()
    ahead = [sampler.next().tolist() for _ in range(4)]  # crosses into epoch 2
    again = LengthBucketSampler(lengths, 10, seed=3, pool=3)
    again.set_state(state)
    assert [again.next().tolist() for _ in range(4)] == ahead
