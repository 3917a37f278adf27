"""The browser's models (attnlab.site.onnx): the exported graphs give run_with_cache's numbers.

Float32 exports: every output (each layer's q, k, v, scores, weights, z; the logits) within 1e-4 of
``attnlab.inspect.run_with_cache`` on several sentences of several lengths, run by onnxruntime (the
engine onnxruntime-web compiles to WebAssembly). int8 exports: attention weights and next-token
probabilities within ``INT8_BOUND``, the unbounded tensors within ``INT8_RELATIVE_BOUND`` of their
largest magnitude. And the exported files stay within the size budget the README states.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnlab import catalog as cat
from attnlab.inspect import run_with_cache
from attnlab.site import onnx as site_onnx

ort = pytest.importorskip("onnxruntime")

SENTENCES = {
    "shakespeare-char": ["To be, or not to be: that is the question.", "O", "ROMEO:\nWhat light through yonder window breaks?"],
    "minilm": ["The cat sat on the mat because it was tired.", "Héllo, WÖRLD!", "antidisestablishmentarianism [SEP] ok"],
}
# Bytes (the README's "Static site" section states them): (float32, int8) per model.
SIZE_BUDGET = {"shakespeare-char": (4_000_000, 1_200_000), "minilm": (90_000_000, 26_000_000)}


def _export(tmp_path_factory: pytest.TempPathFactory, name: str, int8: bool) -> tuple[cat.LoadedModel, dict, object]:
    loaded = cat.load(name)
    out = tmp_path_factory.mktemp(f"{name}-{'int8' if int8 else 'fp32'}")
    manifest = site_onnx.export_model(loaded, out, int8=int8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    return loaded, {"manifest": manifest, "dir": out}, session


@pytest.fixture(scope="module", params=[
    ("shakespeare-char", False), ("shakespeare-char", True),
    pytest.param(("minilm", False), marks=pytest.mark.slow), pytest.param(("minilm", True), marks=pytest.mark.slow),
], ids=lambda p: f"{p[0]}-{'int8' if p[1] else 'fp32'}")
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    name, int8 = request.param
    if not any(i.name == name and i.available for i in cat.catalog()):
        pytest.skip(f"model {name} is not installed")
    loaded, info, session = _export(tmp_path_factory, name, int8)
    return name, int8, loaded, info, session


def _runs(name: str, loaded: cat.LoadedModel, session, names: list[str]):
    for text in SENTENCES[name]:
        ids = loaded.tokenizer.encode(text)
        outputs = session.run(names, {"ids": np.array([ids], dtype=np.int64)})
        with torch.no_grad():
            _, cache = run_with_cache(loaded.model, torch.tensor([ids]), names=names)
        yield text, dict(zip(names, outputs, strict=True)), cache


def test_outputs_are_run_with_cache_numbers(exported) -> None:
    name, int8, loaded, info, session = exported
    names = [o["name"] for o in info["manifest"]["outputs"]]
    assert names == site_onnx.exported_hooks(loaded)
    n_layers = loaded.config.n_layers
    assert sum(n.endswith("attn.hook_weights") for n in names) == n_layers  # every layer's attention
    for text, got, cache in _runs(name, loaded, session, names):
        for hook in names:
            ref = cache[hook].numpy()
            out = got[hook]
            assert out.shape == ref.shape, (text, hook)
            assert list(out.shape) == [len(ref[0]) if d == "seq" and i == 1 else (ref.shape[i] if d == "seq" else d)
                                       for i, d in enumerate(next(o["shape"] for o in info["manifest"]["outputs"] if o["name"] == hook))]
            finite = np.isfinite(ref)
            np.testing.assert_array_equal(np.isfinite(out), finite, err_msg=f"{hook}: masked positions differ")
            diff = np.abs(out[finite].astype(np.float64) - ref[finite])
            if not int8:
                assert diff.max() <= 1e-4, (text, hook, diff.max())
            elif hook.endswith("hook_weights"):
                assert diff.max() <= site_onnx.INT8_BOUND, (text, hook, diff.max())
            else:
                assert diff.max() <= site_onnx.INT8_RELATIVE_BOUND * np.abs(ref[finite]).max(), (text, hook, diff.max())
        if "hook_logits" in names:
            probs = torch.softmax(torch.from_numpy(got["hook_logits"][0, -1]).double(), -1)
            ref_probs = torch.softmax(cache["hook_logits"][0, -1].double(), -1)
            bound = site_onnx.INT8_BOUND if int8 else 1e-4
            assert (probs - ref_probs).abs().max().item() <= bound


def test_manifest_and_files(exported) -> None:
    name, int8, loaded, info, _ = exported
    manifest, folder = info["manifest"], info["dir"]
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert manifest["model"] == name and manifest["precision"] == ("int8" if int8 else "float32")
    assert manifest["n_layers"] == loaded.config.n_layers and manifest["n_heads"] == loaded.config.n_heads
    assert set(manifest["files"]) == {"model.onnx", manifest["tokenizer"]["file"]}
    for file, size in manifest["files"].items():
        assert (folder / file).stat().st_size == size
    tok = manifest["tokenizer"]
    if tok["kind"] == "char":
        assert json.loads((folder / "vocab.json").read_text()) == loaded.tokenizer.chars
    else:
        pieces = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
        assert len(pieces) == loaded.tokenizer.vocab_size
        assert [pieces[tok["cls"]], pieces[tok["sep"]], tok["unk_token"]] == ["[CLS]", "[SEP]", "[UNK]"]
        assert all(pieces[i] == loaded.tokenizer.tokens([i])[0] for i in (0, 100, 1996, 2023, len(pieces) - 1))


def test_export_leaves_the_shared_model_as_it_was(tmp_path) -> None:
    from attnlab.inspect import hook_points
    from attnlab.models.stack import attention_backend

    model = cat.load("shakespeare-char").model
    backend = attention_backend(model)
    model.train()
    try:
        site_onnx.export_model(cat.load("shakespeare-char"), tmp_path, int8=False)
        assert model.training and attention_backend(model) == backend
        assert not any(p._forward_hooks for p in hook_points(model).values())
    finally:
        model.eval()


def test_manifest_lists_only_this_exports_files(tmp_path) -> None:
    (tmp_path / "vocab.txt").write_text("left from another export\n")
    manifest = site_onnx.export_model(cat.load("shakespeare-char"), tmp_path, int8=False)
    assert set(manifest["files"]) == {"model.onnx", "vocab.json"}


def test_export_sizes_within_budget(exported) -> None:
    name, int8, _, info, _ = exported
    budget = SIZE_BUDGET[name][int8]
    total = sum(info["manifest"]["files"].values())
    assert total <= budget, f"{name} {'int8' if int8 else 'fp32'}: {total:,} bytes, budget {budget:,}"
    if int8:  # int8 weights are about a quarter of float32's
        fp32_model = 4 * sum(p.numel() for p in cat.load(name).model.parameters())
        assert info["manifest"]["files"]["model.onnx"] < 0.4 * fp32_model


def test_a_tokenizer_without_a_browser_version_is_refused(tmp_path) -> None:
    loaded = cat.load("bible-bpe")
    with pytest.raises(site_onnx.ExportError, match=r"bible-bpe.*no browser version"):
        site_onnx.export_model(loaded, tmp_path / "x", int8=False)
    assert not (tmp_path / "x").exists()


def test_an_encoder_decoder_is_refused(tmp_path) -> None:
    with pytest.raises(site_onnx.ExportError, match=r"translator.*encoder-decoder"):
        site_onnx.export_model(cat.load("translator"), tmp_path, int8=False)


def test_runtime_missing_names_the_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNLAB_ORT_DIST", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"make install.*npm"):
        site_onnx.vendor_runtime(tmp_path / "site")


def test_vendor_runtime_copies_the_wasm_build(tmp_path) -> None:
    try:
        source = site_onnx.runtime_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    got = site_onnx.vendor_runtime(tmp_path)
    folder = tmp_path / "vendor" / "onnxruntime-web"
    assert sorted(p.name for p in folder.iterdir()) == sorted(site_onnx.RUNTIME_FILES)
    assert got["version"] == json.loads((source.parent / "package.json").read_text())["version"]
    for file in site_onnx.RUNTIME_FILES:
        assert (folder / file).read_bytes() == (source / file).read_bytes()


def test_export_for_site_lays_out_what_live_js_loads(tmp_path) -> None:
    try:
        site_onnx.runtime_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    got = site_onnx.export_for_site(tmp_path, [cat.load("shakespeare-char")], int8=True)
    assert (tmp_path / "models" / "shakespeare-char" / "manifest.json").is_file()
    assert (tmp_path / "vendor" / "onnxruntime-web" / "ort-wasm-simd-threaded.wasm").is_file()
    on_disk = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert got["bytes"] == on_disk
    live = (site_onnx.Path(site_onnx.__file__).parents[1] / "web" / "static" / "live.js").read_text()
    assert 'const RUNTIME = "vendor/onnxruntime-web/"' in live and "`models/${encodeURIComponent(name)}/`" in live
