"""``attnlab site``'s pieces that need no model: request keys, number writing, the page's static copy, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from attnlab.cli import main
from attnlab.site import export as ex
from attnlab.web.app import STATIC_DIR


def test_a_request_key_sorts_the_body_at_every_level_and_has_no_spaces() -> None:
    a = ex.request_key("POST", "/api/qkv", {"text": "élan “x”", "model": "m", "layer": 3, "nested": {"b": 1, "a": [True, None]}})
    b = ex.request_key("POST", "/api/qkv", {"nested": {"a": [True, None], "b": 1}, "layer": 3, "model": "m", "text": "élan “x”"})
    assert a == b == 'POST /api/qkv {"layer":3,"model":"m","nested":{"a":[true,null],"b":1},"text":"élan “x”"}'
    assert ex.request_key("GET", "/api/tour/3") == "GET /api/tour/3"


def test_site_js_computes_the_same_key_as_python() -> None:
    """static/site.js writes the key the same way (sorted keys, JSON.stringify of each value, no spaces)."""
    js = (STATIC_DIR / "site.js").read_text(encoding="utf-8")
    assert "`POST ${path} ${canonical(body)}`" in js and "`GET ${path}`" in js
    assert ".sort()" in js and '`${JSON.stringify(k)}:${canonical(value[k])}`' in js


def test_float32_values_are_written_short_and_read_back_to_the_same_float32() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(2000).astype(np.float32), np.float32([1e-9, -3e-7, 1e30, 0.0, 1.0])])
    data = {"w": [[float(v) for v in values]], "n": 3, "s": "x", "f64": 0.1}
    written = json.dumps(ex._compact(data), separators=(",", ":"))
    back = json.loads(written)
    assert np.array_equal(np.float32(back["w"][0]), values)  # every float32 exactly
    assert back["f64"] == 0.1 and back["n"] == 3 and back["s"] == "x"  # a float64 that is no float32 stays as it was
    assert len(written) < 0.75 * len(json.dumps(data, separators=(",", ":")))


@pytest.mark.parametrize(("tokens", "word", "found"), [
    (["[CLS]", "john", "she", "[SEP]"], "She", 2), (["Ġthe", "Ġcat"], "cat", 1), (["▁it"], "it", 0), (["a"], "b", None),
])
def test_find_token_matches_the_pages_rule(tokens: list[str], word: str, found: int | None) -> None:
    assert ex.find_token(tokens, word) == found


def test_default_focus_matches_the_pages_rule() -> None:
    assert ex.default_focus(["[CLS]", "she", "ran", "[SEP]"]) == 1
    assert ex.default_focus(["[CLS]", "he", "ran", "[SEP]"]) == 2
    assert ex.default_focus(["a", "b"]) == 1


def test_the_copied_page_uses_relative_urls_and_says_it_is_static(tmp_path: Path) -> None:
    ex._static_files(tmp_path, STATIC_DIR, "cpu")
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert '<html lang="en" data-site="site.json">' in html
    assert not re.search(r'(href|src)="/', html)
    assert 'href="static/style.css"' in html and 'src="static/index.js"' in html
    assert "computed in advance on a cpu" in html and 'id="serve-device"' in html
    for p in STATIC_DIR.rglob("*"):
        if p.is_file() and "__pycache__" not in p.parts:
            assert (tmp_path / "static" / p.relative_to(STATIC_DIR)).read_bytes() == p.read_bytes()
    assert (tmp_path / ".nojekyll").is_file()


def test_the_generate_views_prompt_is_read_from_the_page() -> None:
    assert ex._generate_prompt(STATIC_DIR) == "John gave the book to Sarah because she"


def test_the_command_refuses_an_unknown_model_and_a_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["site", str(tmp_path / "out"), "--model", "no-such-model"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no model 'no-such-model'; models: ") and "minilm" in err[0]
    file = tmp_path / "file"
    file.write_text("x")
    assert main(["site", str(file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {file} is a file; give a folder to write the site into"]
    assert file.read_text() == "x"
