"""Replies are split and clipped between grapheme clusters only (issue 24 item 7).

Before, a Telegram part ended between the two regional indicators of 🇺🇸, and every later flag re-paired as
🇸🇺; SMS parts did the same ("(1/2) …🇺" / "(2/2) 🇸…"), and so could ZWJ sequences and combining marks.
"""

from __future__ import annotations

import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.channels.partials import partial_text
from edge.channels.splitting import clip, split_text
from edge.channels.twilio.normalize import split_message, spoken

FLAG_US, FLAG_FR = "\U0001f1fa\U0001f1f8", "\U0001f1eb\U0001f1f7"
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl: one cluster of 5
KISS = "\U0001f469\u200d\u2764\ufe0f\u200d\U0001f48b\u200d\U0001f468"  # 8 code points
E_ACUTE = "e\u0301"  # e + combining acute
ZALGO_A = "a\u0301\u0302\u0303\u0304"
HANGUL = "\u1100\u1161\u11a8"  # a syllable from conjoining jamo
HEBREW = "\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd"  # shalom, with points
ARABIC = "\u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627"  # marhaban, with harakat
THAI = "\u0e01\u0e33"
SKIN = "\U0001f44b\U0001f3fd"  # waving hand, medium skin tone
KEYCAP = "1\ufe0f\u20e3"
CLUSTERS = [FLAG_US, FLAG_FR, FAMILY, KISS, E_ACUTE, ZALGO_A, HANGUL, HEBREW, ARABIC, THAI, SKIN, KEYCAP,
            "\r\n", " \u0301", "a", "word", "Paris.", "?", ",", " ", "\n", "\n\n", "\u200f"]


def clusters(text: str) -> list[str]:
    return list(regex.findall(r"\X", text))


def assert_whole(parts: list[str], text: str) -> None:
    """Each part is a run of ``text``'s own clusters, in order; only white-space clusters are dropped."""
    original = clusters(text)
    i = 0
    for part in parts:
        while i < len(original) and original[i].isspace():
            i += 1
        own = clusters(part)
        assert own == original[i:i + len(own)], (part, original[i:i + len(own)])
        i += len(own)
    assert all(c.isspace() for c in original[i:])


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(CLUSTERS), min_size=1, max_size=300), st.integers(min_value=12, max_value=160))
def test_every_part_is_whole_clusters_within_the_limit(pieces: list[str], limit: int) -> None:
    text = "".join(pieces)
    parts = split_text(text, limit)
    assert all(0 < len(part) <= limit for part in parts)
    assert_whole(parts, text)
    assert split_text(text, limit) == parts  # deterministic: a retry splits the same way


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(CLUSTERS), min_size=1, max_size=200), st.integers(min_value=1, max_value=120))
def test_a_clip_ends_between_clusters(pieces: list[str], limit: int) -> None:
    text = "".join(pieces)
    head = clip(text, limit)
    assert len(head) <= limit
    assert clusters(head) == clusters(text)[:len(clusters(head))]


def test_flags_at_every_offset_stay_flags() -> None:
    """The reproduction: flags after a prefix of each length, so that a cut at the limit lands in a flag."""
    for prefix in range(0, 8):
        text = "x" * prefix + FLAG_US * 120
        for limit in (20, 21, 50, 51):
            parts = split_text(text, limit)
            assert_whole(parts, text)
            assert all(set(clusters(p)) <= {"x", FLAG_US} for p in parts)


def test_sms_parts_are_numbered_and_whole() -> None:
    text = FAMILY * 80  # no spaces: each cut falls wherever the limit does
    parts = split_message(text, 160)
    assert [p[:p.index(" ") + 1] for p in parts] == [f"({i}/{len(parts)}) " for i in range(1, len(parts) + 1)]
    assert all(len(p) <= 160 for p in parts)
    assert all(set(clusters(p[p.index(" ") + 1:])) == {FAMILY} for p in parts)


def test_a_partial_and_a_spoken_reply_are_clipped_between_clusters() -> None:
    shown = partial_text("a" + FLAG_US * 50, 20)
    assert shown.endswith(" …") and set(clusters(shown[:-2])) <= {"a", FLAG_US} and len(shown) <= 20
    said = spoken(E_ACUTE * 60, 25)
    assert set(clusters(said.rstrip("…"))) == {E_ACUTE}


def test_one_cluster_longer_than_a_part_is_cut_rather_than_sent_too_long() -> None:
    zalgo = "a" + "\u0301" * 50
    assert [len(p) for p in split_text(zalgo, 20)] == [20, 20, 11]
