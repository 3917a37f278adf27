"""Explanations: Markdown files under ``web/content/`` rendered to HTML on the server.

A deliberately tiny renderer for the subset the pages use: ``#`` headings, paragraphs, ``-`` and
``1.`` lists, fenced code, inline code, ``**bold**``, ``*emphasis*`` and ``[links](target)``. MathML
(``<math>...</math>``, inline or as a block) passes through untouched; everything else is escaped, so
a page cannot inject markup. Links may point to other pages (``#learn/slug``) or to http(s) URLs.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from attnlab.web import schemas as s
from attnlab.web.errors import NotFoundError

CONTENT_DIR = Path(__file__).parent / "content"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_MATH = re.compile(r"(<math\b.*?</math>)", re.S)
_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\*(.+?)\*|\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    out: list[str] = []
    for i, chunk in enumerate(_MATH.split(text)):
        if i % 2:
            out.append(chunk)
            continue
        pos = 0
        for m in _INLINE.finditer(chunk):
            out.append(html.escape(chunk[pos : m.start()], quote=False))
            code, bold, em, label, target = m.groups()
            if code is not None:
                out.append(f"<code>{html.escape(code, quote=False)}</code>")
            elif bold is not None:
                out.append(f"<strong>{_inline(bold)}</strong>")
            elif em is not None:
                out.append(f"<em>{_inline(em)}</em>")
            elif target.startswith(("#", "https://", "http://")):
                out.append(f'<a href="{html.escape(target)}">{_inline(label)}</a>')
            else:
                out.append(_inline(label))
            pos = m.end()
        out.append(html.escape(chunk[pos:], quote=False))
    return "".join(out)


def render(markdown: str) -> str:
    """Markdown (the subset above) to HTML."""
    blocks: list[str] = []
    lines = markdown.splitlines()
    i = 0
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            code: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                code.append(lines[i])
                i += 1
            blocks.append(f"<pre><code>{html.escape(chr(10).join(code), quote=False)}</code></pre>")
        elif stripped.startswith("<math"):
            flush()
            math = [line]
            while "</math>" not in lines[i] and i + 1 < len(lines):
                i += 1
                math.append(lines[i])
            blocks.append("\n".join(math))
        elif m := re.match(r"^(#{1,4})\s+(.*)$", stripped):
            flush()
            level = len(m[1])
            blocks.append(f"<h{level}>{_inline(m[2])}</h{level}>")
        elif re.match(r"^(-|\d+\.)\s+", stripped):
            flush()
            ordered = stripped[0].isdigit()
            items: list[str] = []
            while i < len(lines) and (item := re.match(r"^\s*(-|\d+\.)\s+(.*)$", lines[i])):
                items.append(item[2])
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                    items[-1] += " " + lines[i].strip()
                    i += 1
            tag = "ol" if ordered else "ul"
            blocks.append(f"<{tag}>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + f"</{tag}>")
            continue
        elif not stripped:
            flush()
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    return "\n".join(blocks)


def slugs() -> list[str]:
    return sorted(p.stem for p in CONTENT_DIR.glob("*.md"))


@lru_cache(maxsize=64)
def _load(slug: str) -> s.ContentPage:
    text = (CONTENT_DIR / f"{slug}.md").read_text(encoding="utf-8")
    first = text.splitlines()[0] if text else slug
    title = first.lstrip("#").strip() if first.startswith("#") else slug
    return s.ContentPage(slug=slug, title=title, html=render(text))


def page(slug: str) -> s.ContentPage:
    """One rendered page; the slug must name an existing file (no paths, no traversal)."""
    if not _SLUG.match(slug) or slug not in slugs():
        raise NotFoundError(f"no explanation page {slug!r}; pages: {', '.join(slugs())}")
    return _load(slug)


def index(learn_order: Sequence[str]) -> s.ContentIndex:
    """Every page, in ``learn_order`` (the order the guided tour meets them: ``tour.learn_order()``, given
    by the caller because the tour reads its steps through this module's renderer), then the others
    alphabetically."""
    first = [p for p in learn_order if p in slugs()]
    ordered = first + [p for p in slugs() if p not in first]
    return s.ContentIndex(pages=[{"slug": p, "title": _load(p).title} for p in ordered])
