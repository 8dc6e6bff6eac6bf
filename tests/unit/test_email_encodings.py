"""Whatever a mail's headers and body claim to be encoded in, it parses to valid text and a reply can be built.

Issue 24's reproductions: ``Subject: =?utf-7?q?hi_+2AA-?=`` (a lone surrogate, in the subject or the From
display name) was accepted, and then ``build_reply`` raised ``UnicodeEncodeError: surrogates not allowed`` on
every retry, holding the thread's next reply behind it; a body in ``charset=unicode_escape`` carrying
``\\ud800`` crashed tokenisation three times.
"""

from __future__ import annotations

import base64
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.channels.email.normalize import decode_text, normalize, parse_mail
from edge.channels.email.smtp import build_reply
from tasks.schemas import envelope_errors

CALLBACK = "http://127.0.0.1:8000/v1/channels/email/callback"
SURROGATE = re.compile("[\ud800-\udfff]")
CHARSETS = ["utf-8", "utf-7", "latin-1", "cp1252", "shift_jis", "koi8-r", "utf-16", "utf-16-le", "big5",
            "unicode_escape", "raw_unicode_escape", "punycode", "idna", "rot13", "base64", "x-unknown", "", "utf-8*"]


def raw_mail(subject: str, display: str = "Alice", body: bytes = b"Hello", charset: str = "utf-8") -> bytes:
    return (f"From: {display} <alice@example.org>\r\nTo: bot@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <m1@example.org>\r\nContent-Type: text/plain; charset={charset}\r\n\r\n").encode(
                "ascii", "surrogateescape") + body


def answerable(raw: bytes) -> None:
    """The mail parses to valid text, its envelope passes admission, and its reply can be built and sent."""
    parsed = parse_mail(raw)
    for value in (parsed.subject, parsed.sender_name, parsed.text, parsed.full_text):
        assert not SURROGATE.search(value), value
    envelope = normalize(parsed, source="test", callback_url=CALLBACK, our_address="bot@example.com")
    assert envelope_errors(envelope) == {}
    reply = build_reply(envelope.reply.context, "Thanks, noted.", from_address="bot@example.com")
    reply.as_bytes()  # what smtplib sends


def test_a_utf7_encoded_word_with_a_lone_surrogate_still_gets_a_reply() -> None:
    answerable(raw_mail("=?utf-7?q?hi_+2AA-?="))
    answerable(raw_mail("hello", display="=?utf-7?q?Eve_+2AA-?="))
    assert parse_mail(raw_mail("=?utf-7?q?hi_+2AA-?=")).subject == "hi \ufffd"


def test_a_unicode_escape_body_is_read_as_text_not_as_escapes() -> None:
    raw = raw_mail("hi", body=b"caf\\u00e9 \\ud800 \\x00", charset="unicode_escape")
    answerable(raw)
    assert parse_mail(raw).text == "caf\\u00e9 \\ud800 \\x00"  # the bytes as written


def test_decode_text_never_returns_a_surrogate() -> None:
    for charset in CHARSETS:
        assert not SURROGATE.search(decode_text(b"+2AA- \\ud800 \xed\xa0\x80 ok", charset or None)), charset


_WORD_TEXT = st.text(alphabet=st.characters(codec=None), max_size=40)


@st.composite
def encoded_words(draw: st.DrawFn) -> str:
    """An RFC 2047 encoded word in any charset, valid or not, with q or b encoding of arbitrary bytes."""
    charset = draw(st.sampled_from(CHARSETS)) or "utf-8"
    text = draw(_WORD_TEXT).encode("utf-8", "surrogatepass")
    payload = draw(st.sampled_from([text, draw(st.binary(max_size=40))]))
    if draw(st.booleans()):
        return f"=?{charset}?b?{base64.b64encode(payload).decode()}?="
    quoted = "".join(chr(b) if 0x30 <= b < 0x7f and chr(b) not in "=?_" else f"={b:02X}" for b in payload)
    return f"=?{charset}?q?{quoted}?="


@settings(max_examples=300, deadline=None, derandomize=True)
@given(subject=st.lists(encoded_words(), min_size=1, max_size=3), display=encoded_words(),
       charset=st.sampled_from(CHARSETS), body=st.binary(max_size=200))
def test_any_header_encoding_and_body_charset_can_be_answered(
    subject: list[str], display: str, charset: str, body: bytes
) -> None:
    answerable(raw_mail(" ".join(subject), display=display, body=body, charset=charset or "utf-8"))
