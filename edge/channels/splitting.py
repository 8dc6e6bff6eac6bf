"""Splitting a long reply for providers with a message size limit (SMS, Telegram, Slack).

Deterministic, so a retry splits the same way and per-part "already sent"
records stay valid.
"""

from __future__ import annotations

import re

__all__ = ["split_text"]

# Where a long reply may be split, best first: (pattern, cut after the match instead of before it).
_BOUNDARIES: tuple[tuple[re.Pattern[str], bool], ...] = (
    (re.compile(r"\n[ \t]*\n"), False),  # paragraph
    (re.compile(r"\n"), False),  # line
    (re.compile("[.!?\u2026]+[\"'\u201d\u2019)\\]]*(?=\\s)"), True),  # sentence
    (re.compile(r"[;:,]+(?=\s)"), True),  # clause
    (re.compile(r"\s"), False),  # word
)


def _cut(text: str, size: int) -> int:
    """Where to end the next part of ``text`` (at most ``size`` characters), at the best boundary."""
    floor = max(1, size // 3)  # a boundary this early would waste most of a part: try a weaker one
    window = text[: size + 1]
    for pattern, after in _BOUNDARIES:
        cuts = [m.end() if after else m.start() for m in pattern.finditer(window)]
        good = [c for c in cuts if floor <= c <= size]
        if good:
            return good[-1]
    return size


def split_text(text: str, limit: int) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, each cut at the best boundary available."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = _cut(rest, limit)
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if head:
            parts.append(head)
    if rest:
        parts.append(rest)
    return parts
