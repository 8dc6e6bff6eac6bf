"""HTML to readable text, for uploaded HTML files and HTML-only mail alike.

Scripts, styles and other non-text elements are dropped, block structure
becomes line breaks, list items ``- `` lines and table cells `` | ``-separated.
Quoted history (``<blockquote>``, Gmail's and Thunderbird's quote containers) is
dropped unless ``keep_quotes``: in a mail it is the thread already answered; a
document's quotations are part of it (``convert`` keeps them).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from edge.media.base import Section
from edge.media.text import decode

__all__ = ["convert", "html_to_text"]

_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript", "svg"})
_QUOTE_CLASSES = ("gmail_quote", "moz-cite-prefix")
_BLOCK = frozenset({"p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
                    "hr", "section", "article", "header", "footer", "blockquote"})


class _Text(HTMLParser):
    def __init__(self, *, keep_quotes: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.keep_quotes = keep_quotes
        self.parts: list[str] = []
        self.skip_tag: str | None = None  # the element being dropped, with everything in it
        self.skip_depth = 0

    def _dropped(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in _SKIP:
            return True
        if self.keep_quotes:
            return False
        classes = " ".join(v or "" for k, v in attrs if k == "class")
        return tag == "blockquote" or any(c in classes for c in _QUOTE_CLASSES)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip_tag is not None:
            self.skip_depth += tag == self.skip_tag
            return
        if self._dropped(tag, attrs):
            self.skip_tag, self.skip_depth = tag, 1
            return
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if self.skip_tag is not None:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip_tag is None:
            self.parts.append(data)


def html_to_text(markup: str, *, keep_quotes: bool = False) -> str:
    """Readable text from HTML (stdlib only: no markup survives, nothing is fetched)."""
    parser = _Text(keep_quotes=keep_quotes)
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser is lenient, but never let markup crash intake
        return re.sub(r"<[^>]*>", " ", markup)
    lines = (re.sub(r"\s+", " ", line).strip(" |") for line in "".join(parser.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def convert(path: Path) -> list[Section]:
    return [Section("", html_to_text(decode(path.read_bytes()), keep_quotes=True))]
