"""attnlab.show.head_contexts: the corpus tools' own numbers, drawn by views.js's headContexts."""

from __future__ import annotations

import pytest

from attnlab import interpret, show
from attnlab.catalog import load

pytestmark = pytest.mark.usefixtures("one_thread")
CORPUS = ["In the beginning God created the heavens and the earth.", "God saw the light, and saw that it was good.",
          "The man took the stone and set it up.", "It was evening and it was morning, the first day."]


def test_head_contexts_view_is_the_library_ranking_with_roles(tmp_path) -> None:
    loaded = load("bible-bpe")
    view = show.head_contexts(loaded, 1, 2, corpus=CORPUS, k=3, cache_dir=tmp_path, progress=False)
    scan = interpret.scan_corpus(loaded.model, loaded.tokenizer, CORPUS, cache_dir=tmp_path, progress=False)
    assert scan.from_cache  # the view's pass was cached; this is the same pass
    want = scan.head_contexts(1, 2, 3)
    assert view.kind == "head_contexts" and view.data["contexts"] == [c.to_dict() for c in want.contexts]
    assert view.data["summary"] == want.summary() and view.data["roles"] == scan.roles.of_head(1, 2)
    assert [r["role"] for r in view.data["roles"]] == list(interpret.corpus.ROLES)
    assert "function headContexts" in view.html and "head_contexts" in view.html


def test_head_contexts_view_errors(tmp_path) -> None:
    loaded = load("bible-bpe")
    with pytest.raises(ValueError, match="tokenizer"):
        show.head_contexts(loaded.model, 0, 0, corpus=CORPUS, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="L9H0 does not exist"):
        show.head_contexts(loaded, 9, 0, corpus=CORPUS, cache_dir=tmp_path, progress=False)
