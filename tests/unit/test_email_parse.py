"""parse_mail / normalize / build_reply: pure functions, no server."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from edge.channels.base import PermanentSendError
from edge.channels.email.normalize import (
    MailPart,
    MailRejected,
    delivery_key,
    message_from_fields,
    normalize,
    parse_mail,
)
from edge.channels.email.smtp import build_reply
from edge.media.html import html_to_text

CALLBACK = "http://127.0.0.1:8000/v1/channels/email/callback"


def mail(body: str = "What time is it?", **headers: str) -> bytes:
    head = {"From": "Alice <Alice@Example.org>", "To": "bot@example.com", "Subject": "Question",
            "Message-ID": "<m1@example.org>", **headers}
    lines = [f"{k.replace('_', '-')}: {v}" for k, v in head.items() if v]
    return ("\r\n".join(lines) + "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()


def test_a_plain_mail_becomes_an_envelope_in_its_own_thread() -> None:
    parsed = parse_mail(mail())
    envelope = normalize(parsed, source="test", callback_url=CALLBACK, our_address="bot@example.com")
    assert envelope.sender == "alice@example.org"
    assert envelope.session_id == "email:alice@example.org#m1@example.org"
    assert envelope.text == "Subject: Question\n\nWhat time is it?"
    assert envelope.reply.context["subject"] == "Re: Question"
    assert envelope.channel_message_id == "<m1@example.org>"


def test_a_reply_continues_the_thread_of_its_first_mail_and_loses_the_quote() -> None:
    body = "Thanks! And tomorrow?\r\n\r\nOn Mon, 3 Nov 2025, Bot <bot@example.com> wrote:\r\n> It is noon.\r\n"
    parsed = parse_mail(mail(body, Message_ID="<m3@example.org>", In_Reply_To="<r1@example.com>",
                             References="<m1@example.org> <r1@example.com>", Subject="Re: Question"))
    envelope = normalize(parsed, source="test", callback_url=CALLBACK, our_address="bot@example.com")
    assert envelope.session_id == "email:alice@example.org#m1@example.org"
    assert envelope.text == "Thanks! And tomorrow?"
    assert envelope.reply.context["references"] == ["<m1@example.org>", "<r1@example.com>"]


def test_a_signature_is_stripped() -> None:
    assert parse_mail(mail("Short question?\r\n-- \r\nAlice Smith\r\nACME Corp\r\n")).text == "Short question?"


def test_html_only_mail_is_converted_to_text_without_scripts_or_quotes() -> None:
    html = ("<html><head><style>p{}</style><script>alert(1)</script></head><body><p>Hello &amp; <b>hi</b></p>"
            "<blockquote>old stuff</blockquote><ul><li>one</li></ul></body></html>")
    assert html_to_text(html) == "Hello & hi\n\n- one"
    raw = mail().replace(b"text/plain", b"text/html").replace(b"What time is it?", html.encode())
    assert parse_mail(raw).text.startswith("Hello & hi")


def test_unknown_charsets_and_non_utf8_bytes_are_decoded_best_effort() -> None:
    raw = mail("Caf\xe9").replace(b"charset=utf-8", b"charset=x-no-such-charset").replace("Café".encode(), b"Caf\xe9")
    assert parse_mail(raw.replace(b"Caf\xc3\xa9", b"Caf\xe9")).text == "Café"
    latin = mail().replace(b"charset=utf-8", b"charset=iso-8859-1").replace(b"What time is it?", b"Gr\xfc\xdfe")
    assert parse_mail(latin).text == "Grüße"


def test_malformed_mime_is_read_as_far_as_possible() -> None:
    raw = (b"From: bob@example.org\r\nSubject: broken\r\nContent-Type: multipart/mixed\r\n\r\n"
           b"no boundary at all, just text\r\n")
    parsed = parse_mail(raw)
    assert parsed.sender == "bob@example.org" and "no boundary" in parsed.full_text
    assert parsed.message_id is None
    assert delivery_key(parsed).startswith("email:bob@example.org:sha256:")


def test_a_mail_without_from_is_rejected() -> None:
    with pytest.raises(MailRejected):
        parse_mail(b"Subject: who?\r\n\r\nbody")
    with pytest.raises(MailRejected):
        parse_mail(mail(From="not an address"))


def test_attachments_are_kept_for_the_convert_step() -> None:
    msg = EmailMessage()
    msg["From"], msg["Subject"], msg["Message-ID"] = "carol@example.org", "Invoice", "<inv@example.org>"
    msg.set_content("See attached.")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="invoice.pdf")
    parsed = parse_mail(msg.as_bytes())
    assert [(a.name, a.mime, a.data) for a in parsed.attachments] == [
        ("invoice.pdf", "application/pdf", b"%PDF-1.4 fake")
    ]
    from tasks.schemas import Attachment

    att = Attachment("application/pdf", 13, "invoice.pdf", "http://127.0.0.1/x")
    envelope = normalize(parsed, source="t", callback_url=CALLBACK, our_address="", attachments=[att])
    assert envelope.attachments == (att,) and envelope.text.endswith("See attached.")


@pytest.mark.parametrize(("headers", "reason"), [
    ({"Auto_Submitted": "auto-replied"}, "auto_submitted"),
    ({"Auto_Submitted": "auto-generated; owner-email=x@example.org"}, "auto_submitted"),
    ({"X_Autoreply": "yes"}, "auto_submitted"),
    ({"Precedence": "bulk"}, "precedence"),
    ({"Precedence": "list"}, "precedence"),
    ({"Precedence": "junk"}, "precedence"),
    ({"List_Id": "Digest <digest.lists.example.org>"}, "list"),
    ({"List_Unsubscribe": "<mailto:leave@lists.example.org>"}, "list"),
    ({"Return_Path": "<>"}, "bounce"),
    ({"From": "MAILER-DAEMON@mx.example.org"}, "system_sender"),
    ({"From": "Mail Delivery System <postmaster@example.org>"}, "system_sender"),
    ({"From": "bounces+123@lists.example.org"}, "system_sender"),
])
def test_mail_rfc_3834_says_not_to_answer_is_recognised(headers: dict[str, str], reason: str) -> None:
    assert parse_mail(mail(**headers)).not_answered == reason


def test_a_delivery_status_report_is_recognised_raw_and_from_webhook_fields() -> None:
    raw = (b"From: someone@example.org\r\nTo: bot@example.com\r\nSubject: Delivery report\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nYour mail was not delivered.\r\n--b--\r\n")
    assert parse_mail(raw).not_answered == "report"
    fields = message_from_fields([("From", "someone@example.org"), ("Content-Type", "multipart/report; b=x")],
                                 "Your mail was not delivered.", None, [])
    assert parse_mail(fields).not_answered == "report"


def test_ordinary_mail_is_answered() -> None:
    for headers in ({}, {"Auto_Submitted": "no"}, {"Return_Path": "<alice@example.org>"},
                    {"Precedence": "first-class"}):
        assert parse_mail(mail(**headers)).not_answered is None, headers


def test_webhook_fields_rebuild_the_same_mail() -> None:
    headers = [("From", "Dan <dan@example.org>"), ("Subject", "=?utf-8?q?Caf=C3=A9?="),
               ("Message-ID", "<d1@example.org>"), ("Content-Type", "multipart/mixed; boundary=x")]
    msg = message_from_fields(headers, "hello", "<p>hello</p>", [MailPart("a.txt", "text/plain", b"hi")])
    parsed = parse_mail(msg)
    assert (parsed.sender, parsed.subject, parsed.text, parsed.message_id) == (
        "dan@example.org", "Café", "hello", "<d1@example.org>"
    )
    assert [a.name for a in parsed.attachments] == ["a.txt"]


def test_a_reply_cannot_inject_headers_whatever_the_text_and_subject() -> None:
    context = {"to": "alice@example.org", "subject": "Hi\r\nBcc: victim@example.net", "message_id": "<m1@x>",
               "references": ["<m0@x>", "bad\r\nX-Evil: 1"], "from": "bot@example.com"}
    msg = build_reply(context, "Answer\r\nBcc: victim@example.net\r\n\r\nbody", from_address="")
    raw = msg.as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head and b"X-Evil" not in head
    assert msg["Subject"] == "Re: Hi Bcc: victim@example.net"
    assert msg["In-Reply-To"] == "<m1@x>" and msg["References"] == "<m0@x> <m1@x>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert "Answer" in msg.get_content()


def test_a_reply_to_a_bad_address_is_a_permanent_failure() -> None:
    with pytest.raises(PermanentSendError):
        build_reply({"to": "alice@example.org\r\nBcc: x@y.z"}, "hi", from_address="bot@example.com")
