"""Small catalogue models as ONNX graphs that the browser runs with onnxruntime-web (issue 28, item 2).

``export_model`` traces a catalogue model with the weight-returning attention backend and its hook
points recording (the same ``math`` backend and hooks ``attnlab.inspect.run_with_cache`` uses), so
the graph's outputs *are* the hook points the views draw: every layer's ``attn.hook_q | hook_k |
hook_v | hook_scores | hook_weights | hook_z`` (``hook_rot_q | hook_rot_k`` too for rotary models)
and ``hook_logits`` where the model has an output head. Each output is named by its hook. The graph
takes one input, ``ids`` ``(1, seq)`` int64, ``seq`` from 1 to the page's token limit.

Beside ``model.onnx`` it writes what the browser needs to turn a sentence into ids (``static/live.js``
reads both): the character list of a character model (``vocab.json``) or the WordPiece vocabulary of
a BERT tokenizer (``vocab.txt``, one piece per line, line number = id), and ``manifest.json``
(input and outputs with their shapes and hooks, the tokenizer's settings, the limits the server
enforces). A tokenizer the browser code cannot reproduce (byte-level or merges BPE, e.g. the
translator's) is refused with ``ExportError``, never exported with a tokenizer that would differ.

``int8=True`` stores the weights of the matrix products and the embedding tables as int8, one
float32 scale per block of ``_BLOCK`` weights (``_quantize``); the arithmetic stays float32. The page's
numbers then move by at most ``INT8_BOUND`` (attention weights and next-token probabilities, numbers
in [0, 1]), which ``tests/integration/test_site_onnx.py`` checks on several sentences; q, k, v, z,
the scores and the logits are unbounded reals, bounded relative to each tensor's largest magnitude
(``INT8_RELATIVE_BOUND``).

``vendor_runtime`` copies onnxruntime-web's WebAssembly build (installed by ``make install`` from
``site-vendor/package-lock.json`` when npm is present) into a site, so the page loads it from its
own origin.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.catalog import LoadedModel
from attnlab.inspect import hook_name, hook_points, hooks_attached, math_backend
from attnlab.inspect.roles import ROLE_THRESHOLDS, ROLES
from attnlab.web.models import MAX_CHARS, max_tokens, model_lock, self_attention_stack
from attnlab.web.sampling import N_LABELLED

__all__ = [
    "FORMAT",
    "INT8_BOUND",
    "INT8_RELATIVE_BOUND",
    "RUNTIME_FILES",
    "ExportError",
    "browser_tokenizer",
    "export_for_site",
    "export_model",
    "exported_hooks",
    "runtime_dir",
    "vendor_runtime",
]

FORMAT = 2  # the manifest's layout version (live.js refuses others); 2: a threshold per role
OPSET = 17
INPUT = "ids"
#: The attention hook points exported for every layer of the stack the views show.
POINTS = ("hook_q", "hook_k", "hook_v", "hook_rot_q", "hook_rot_k", "hook_scores", "hook_weights", "hook_z")
#: int8 bound on every number in [0, 1] the page shows (attention weights, next-token probabilities).
INT8_BOUND = 0.05
#: int8 bound on q, k, v, z, scores and logits, as a fraction of the tensor's largest magnitude.
INT8_RELATIVE_BOUND = 0.05
#: The files of onnxruntime-web's WebAssembly build that a page needs (ES module, its loader, the binary).
RUNTIME_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
RUNTIME_PACKAGE = "onnxruntime-web"


class ExportError(ValueError):
    """A model that cannot be exported for the browser (its tokenizer, its family); the message says why."""


def exported_hooks(loaded: LoadedModel) -> list[str]:
    """The hook names the graph of ``loaded`` outputs, in output order: layer by layer the points of
    ``POINTS`` the model has, then ``hook_logits`` if it has an output head."""
    points = hook_points(loaded.model)
    stack = self_attention_stack(loaded)
    names = [stack.name(layer, f"attn.{p}") for layer in range(stack.n_layers) for p in POINTS]
    logits = hook_name(None, None, "hook_logits")
    return [n for n in names if n in points] + ([logits] if logits in points else [])


def browser_tokenizer(loaded: LoadedModel) -> tuple[dict[str, Any], dict[str, str]]:
    """What ``static/live.js`` needs to tokenize like ``loaded.tokenizer``: the manifest's ``tokenizer``
    entry and the files to write beside it (name -> text). Raises ``ExportError`` for a tokenizer
    the browser code does not reproduce (anything but a character list or a BERT WordPiece pipeline)."""
    tok = loaded.tokenizer
    if tok.kind == "char":
        return {"kind": "char", "file": "vocab.json"}, {"vocab.json": json.dumps(list(tok.chars), ensure_ascii=False)}
    if tok.kind == "hf_json":
        spec = json.loads(tok.hf.to_str())
        model, norm = spec.get("model") or {}, spec.get("normalizer") or {}
        post = spec.get("post_processor") or {}
        specials = post.get("special_tokens") or {}
        if (model.get("type") != "WordPiece" or norm.get("type") != "BertNormalizer"
                or (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer"
                or post.get("type") != "TemplateProcessing" or set(specials) != {"[CLS]", "[SEP]"}
                or not all(t.get("special") for t in spec.get("added_tokens") or [])):
            raise ExportError(f"model {loaded.name!r}: the browser tokenizes only a character list or BERT's WordPiece "
                              "(BertNormalizer, BertPreTokenizer, [CLS] ... [SEP]); this tokenizer is another kind")
        vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
        if [i for _, i in vocab] != list(range(len(vocab))) or any("\n" in piece or "\r" in piece for piece, _ in vocab):
            raise ExportError(f"model {loaded.name!r}: the WordPiece vocabulary is not a gapless list of one-line pieces")
        lowercase = bool(norm.get("lowercase", True))
        strip = norm.get("strip_accents")
        entry = {
            "kind": "wordpiece", "file": "vocab.txt", "lowercase": lowercase,
            "strip_accents": lowercase if strip is None else bool(strip),  # None: follows lowercase (BERT's rule)
            "clean_text": bool(norm.get("clean_text", True)), "handle_chinese_chars": bool(norm.get("handle_chinese_chars", True)),
            "unk_token": model["unk_token"], "prefix": model.get("continuing_subword_prefix", "##"),
            "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
            "add_special_tokens": bool(tok.add_special_tokens),
            "cls": specials["[CLS]"]["ids"][0], "sep": specials["[SEP]"]["ids"][0],
        }
        return entry, {"vocab.txt": "\n".join(piece for piece, _ in vocab) + "\n"}
    raise ExportError(f"model {loaded.name!r}: its {tok.kind!r} tokenizer has no browser version (char and WordPiece do)")


class _Recorded(nn.Module):
    """``model(ids)`` returning the recorded hook points (filled by hooks attached around the trace)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names
        self.recorded: dict[str, Tensor] = {}

    def forward(self, ids: Tensor) -> tuple[Tensor, ...]:
        self.recorded.clear()
        self.model(ids)
        return tuple(self.recorded[n] for n in self.names)


def _shape(name: str, t: Tensor) -> list[int | str]:
    """``t``'s shape with its sequence axes named ``"seq"`` (hook_logits: axis 1; attention: 2, and 3 for
    (query, key) matrices)."""
    seq_axes = {1} if name.endswith("hook_logits") else ({2, 3} if name.endswith(("hook_scores", "hook_weights")) else {2})
    return ["seq" if i in seq_axes else int(n) for i, n in enumerate(t.shape)]


def _trace(loaded: LoadedModel, names: list[str], path: Path) -> dict[str, list[int | str]]:
    """Write the float32 graph of ``loaded`` (in eval mode) to ``path``; the output shapes by hook name.

    Holds the model's lock (``attnlab.web.models.model_lock``) while its hooks and backend are switched,
    and gives the model back in the mode it was in."""
    wrapper = _Recorded(loaded.model, names)

    def record(name: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            wrapper.recorded[name] = output

        return hook

    length = min(8, max_tokens(loaded))
    sample = (torch.arange(length) % loaded.config.vocab_size)[None]  # any ids: the graph does not depend on them
    with model_lock(loaded.name):
        was_training = loaded.model.training
        loaded.model.eval()
        try:
            with torch.no_grad(), math_backend(loaded.model), \
                    hooks_attached(loaded.model, {n: record(n) for n in names}), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer warns about the model's input checks (constants in the graph)
                outputs = wrapper(sample)
                # The TorchScript exporter: it traces the Python checks on the ids (min, max, length) as the
                # constants they are; torch.export (dynamo=True) refuses them as data-dependent branches.
                torch.onnx.export(
                    wrapper, (sample,), str(path), input_names=[INPUT], output_names=names,
                    dynamic_axes={INPUT: {1: "seq"}}, opset_version=OPSET, dynamo=False,
                )
        finally:
            loaded.model.train(was_training)
    return {n: _shape(n, t) for n, t in zip(names, outputs, strict=True)}


#: Which input of which operator is a weight matrix, and the axis its rows of scales run along:
#: a MatMul's right operand (in, out) gets one scale per output column, an embedding table
#: (Gather's data, (vocab, width)) one per token row.
_WEIGHT_INPUTS = {("MatMul", 1): 1, ("Gather", 0): 0}
_MIN_QUANTIZED = 1024  # smaller matrices stay float32: they weigh nothing
_BLOCK = 32  # weights that share one scale, along the axis a product sums over


def _quantize(src: Path, dst: Path) -> None:
    """Weight-only int8: each weight matrix (``_WEIGHT_INPUTS``) becomes int8 with one float32 scale per
    ``_BLOCK`` consecutive weights of one output channel (symmetric, the block's largest magnitude is
    127), and ``Cast``, ``Mul``, ``Reshape`` (and ``Transpose``) nodes rebuild the float32 matrix under
    its old name for its consumers: the arithmetic stays float32, only the weights' rounding moves the
    numbers. Plain ONNX operators (opset 17), so any runtime runs it.

    Measured on MiniLM (the largest attention-weight change over four sentences): onnxruntime's
    ``quantize_dynamic``, which also quantizes activations to uint8 per call, 0.23; one scale per
    output channel, 0.069; one per block of 32, 0.022.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    axes: dict[str, int] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            axis = _WEIGHT_INPUTS.get((node.op_type, index))
            if axis is not None and name in inits and len(inits[name].dims) == 2:
                axes.setdefault(name, axis)
    kept, added = [], []
    for tensor in graph.initializer:
        axis = axes.get(tensor.name)
        weights = numpy_helper.to_array(tensor)
        if axis is None or weights.dtype != np.float32 or weights.size < _MIN_QUANTIZED:
            kept.append(tensor)
            continue
        base = tensor.name
        # Put the reduced axis (a MatMul's inputs, an embedding row's numbers) last, cut it into blocks.
        w = weights.T if axis == 1 else weights  # (channels, reduced)
        channels, reduced = w.shape
        block = _BLOCK if reduced % _BLOCK == 0 else reduced
        blocks = w.reshape(channels, reduced // block, block)
        peak = np.abs(blocks).max(axis=2, keepdims=True)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(blocks / scale), -127, 127).astype(np.int8)
        kept += [numpy_helper.from_array(q, f"{base}__int8"), numpy_helper.from_array(scale, f"{base}__scale"),
                 numpy_helper.from_array(np.array(w.shape, dtype=np.int64), f"{base}__shape")]
        cast, scaled, flat = (f"{base}__{s}" for s in ("float", "scaled", "flat"))
        added += [
            helper.make_node("Cast", [f"{base}__int8"], [cast], to=onnx.TensorProto.FLOAT),
            helper.make_node("Mul", [cast, f"{base}__scale"], [scaled]),
            helper.make_node("Reshape", [scaled, f"{base}__shape"], [flat if axis == 1 else base]),
        ]
        if axis == 1:
            added.append(helper.make_node("Transpose", [flat], [base], perm=[1, 0]))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = added + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def export_model(loaded: LoadedModel, out_dir: str | Path, *, int8: bool) -> dict[str, Any]:
    """Write ``model.onnx``, the tokenizer's files and ``manifest.json`` of ``loaded`` into ``out_dir``
    (created; files of an earlier export replaced). Returns the manifest (also written), whose
    ``files`` gives the size in bytes of each file written beside it.

    Raises ``ExportError`` for a model the browser cannot run: an encoder-decoder (the page would need
    the decoding loop), or a tokenizer without a browser version (``browser_tokenizer``).
    """
    if loaded.config.family == "encoder-decoder":
        raise ExportError(f"model {loaded.name!r} is an encoder-decoder: the browser runs encoders and decoders only")
    tokenizer, tokenizer_files = browser_tokenizer(loaded)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = exported_hooks(loaded)
    stack = self_attention_stack(loaded)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        shapes = _trace(loaded, names, fp32)
        if int8:
            _quantize(fp32, Path(tmp) / "int8.onnx")
            fp32 = Path(tmp) / "int8.onnx"
        shutil.copyfile(fp32, out / "model.onnx")
    for name, text in tokenizer_files.items():
        (out / name).write_text(text, encoding="utf-8")
    manifest: dict[str, Any] = {
        "format": FORMAT, "model": loaded.name, "family": loaded.config.family, "stack": stack.stack,
        "causal": stack.causal, "n_layers": stack.n_layers, "n_heads": loaded.config.n_heads,
        "positions": loaded.config.positions, "vocab_size": loaded.tokenizer.vocab_size,
        "precision": "int8" if int8 else "float32",
        "tolerance": {"unit_interval": INT8_BOUND, "relative": INT8_RELATIVE_BOUND} if int8 else {"unit_interval": 1e-4},
        "limits": {"max_chars": MAX_CHARS, "max_tokens": max_tokens(loaded), "next_token_labels": N_LABELLED},
        "input": {"name": INPUT, "dtype": "int64", "shape": [1, "seq"]},
        "outputs": [{"name": n, "hook": n, "dtype": "float32", "shape": shapes[n]} for n in names],
        "tokenizer": tokenizer,
        # attnlab.inspect.roles' rule, which live.js applies to the weights (the attention view's head roles)
        "roles": {"names": list(ROLES), "thresholds": {r: ROLE_THRESHOLDS[r] for r in ROLES}},
    }
    manifest["files"] = {name: (out / name).stat().st_size for name in sorted(["model.onnx", *tokenizer_files])}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def runtime_dir() -> Path:
    """Where onnxruntime-web's ``dist`` folder is: ``$ATTNLAB_ORT_DIST``, else the checkout's
    ``site-vendor/node_modules/onnxruntime-web/dist`` (``make install`` puts it there when npm exists).
    Raises ``FileNotFoundError`` naming the folder and the command that fills it."""
    env = os.environ.get("ATTNLAB_ORT_DIST")
    folder = Path(env) if env else Path(__file__).resolve().parents[3] / "site-vendor" / "node_modules" / RUNTIME_PACKAGE / "dist"
    missing = [f for f in RUNTIME_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"onnxruntime-web is not installed ({folder / missing[0]} is missing): run `make install` with npm "
            "on the PATH (it runs `npm ci --prefix site-vendor`), or set ATTNLAB_ORT_DIST to its dist folder")
    return folder


def vendor_runtime(site_dir: str | Path) -> dict[str, Any]:
    """Copy onnxruntime-web's WebAssembly files (``RUNTIME_FILES``) into ``site_dir/vendor/onnxruntime-web/``,
    where ``static/live.js`` loads them (relative to the page, no CDN). Returns ``{"version", "files":
    {name: bytes}}``. Raises ``FileNotFoundError`` as ``runtime_dir`` does."""
    src = runtime_dir()
    dst = Path(site_dir) / "vendor" / RUNTIME_PACKAGE
    dst.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_FILES:
        shutil.copyfile(src / name, dst / name)
    version = json.loads((src.parent / "package.json").read_text(encoding="utf-8")).get("version", "unknown")
    return {"version": version, "files": {name: (dst / name).stat().st_size for name in RUNTIME_FILES}}


def export_for_site(site_dir: str | Path, models: list[LoadedModel], *, int8: bool) -> dict[str, Any]:
    """Everything ``static/live.js`` needs in a static site at ``site_dir``: the runtime
    (``vendor_runtime``) and each model under ``models/<name>/`` (``export_model``). Returns
    ``{"runtime": ..., "models": {name: manifest}, "bytes": total bytes written}``. Raises as those do."""
    root = Path(site_dir)
    runtime = vendor_runtime(root)
    manifests = {m.name: export_model(m, root / "models" / m.name, int8=int8) for m in models}
    total = sum(runtime["files"].values()) + sum(sum(m["files"].values()) for m in manifests.values())
    return {"runtime": runtime, "models": manifests, "bytes": total}
