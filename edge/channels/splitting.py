"""Splitting a long reply for providers with a message size limit (SMS, Telegram, Slack), and clipping one.

Deterministic, so a retry splits the same way and per-part "already sent"
records stay valid.

Every cut falls between two grapheme clusters (Unicode's user-perceived
characters, ``regex``'s ``\\X``), never inside one: a flag is two regional
indicators, and cutting 🇺🇸 between them showed "🇺" and "🇸", and re-paired
every later flag of the reply the wrong way (🇸🇺). The same holds for ZWJ
sequences (👨‍👩‍👧), a letter and its combining marks, and Hangul syllables.
Limits count code points, as before; only a single cluster longer than a
whole part (hundreds of stacked marks) is cut inside, since no part may pass
its provider's limit (``clip`` leaves such a cluster out instead).
"""

from __future__ import annotations

import re

import regex

__all__ = ["clip", "split_text"]

# Where a long reply may be split, best first: (pattern, cut after the match instead of before it).
_BOUNDARIES: tuple[tuple[re.Pattern[str], bool], ...] = (
    (re.compile(r"\n[ \t]*\n"), False),  # paragraph
    (re.compile(r"\n"), False),  # line
    (re.compile("[.!?\u2026]+[\"'\u201d\u2019)\\]]*(?=\\s)"), True),  # sentence
    (re.compile(r"[;:,]+(?=\s)"), True),  # clause
    (re.compile(r"\s"), False),  # word
)
_CLUSTER = regex.compile(r"\X")
# How far past a part's end clusters are read to know where the last one inside it ends (a longer cluster
# is cut inside anyway): segmentation runs left to right, so the ones before are the same as in the whole.
_LOOKAHEAD = 64


def _cluster_ends(text: str, size: int) -> list[int]:
    """The offsets up to ``size`` at which a grapheme cluster of ``text`` ends."""
    ends = []
    for match in _CLUSTER.finditer(text, 0, min(len(text), size + _LOOKAHEAD)):
        if match.end() > size:
            break
        ends.append(match.end())
    return ends


def _cut(text: str, size: int) -> int:
    """Where to end the next part of ``text`` (at most ``size`` characters), at the best boundary."""
    floor = max(1, size // 3)  # a boundary this early would waste most of a part: try a weaker one
    ends = set(_cluster_ends(text, size))
    window = text[: size + 1]
    for pattern, after in _BOUNDARIES:
        cuts = [m.end() if after else m.start() for m in pattern.finditer(window)]
        good = [c for c in cuts if floor <= c <= size and c in ends]
        if good:
            return good[-1]
    return max(ends) if ends else size


def _lstrip(text: str) -> str:
    """``text`` without its leading clusters that are all white space (a space that carries a combining mark
    is not: it stays whole)."""
    start = 0
    for match in _CLUSTER.finditer(text):
        if not match.group().isspace():
            break
        start = match.end()
    return text[start:]


def _rstrip(text: str) -> str:
    """``text`` without its trailing clusters that are all white space."""
    clusters = _CLUSTER.findall(text)
    while clusters and clusters[-1].isspace():
        clusters.pop()
    return "".join(clusters)


def split_text(text: str, limit: int) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, each cut at the best boundary available."""
    parts: list[str] = []
    rest = _rstrip(_lstrip(text))
    while len(rest) > limit:
        cut = _cut(rest, limit)
        head, rest = _rstrip(rest[:cut]), _lstrip(rest[cut:])
        if head:
            parts.append(head)
    if rest:
        parts.append(rest)
    return parts


def clip(text: str, limit: int) -> str:
    """The longest start of ``text`` of at most ``limit`` characters that ends between two grapheme clusters
    (empty if its first cluster alone is longer: what is clipped is shown as unfinished anyway)."""
    if len(text) <= limit:
        return text
    ends = _cluster_ends(text, limit)
    return text[: ends[-1]] if ends else ""
