"""Mail in, envelope out — pure functions, no I/O (STYLE 1), so unit tests call them without a server.

``parse_mail`` turns raw MIME (or an ``EmailMessage`` a webhook rebuilt from
parsed fields) into a ``ParsedMail``: the sender, the thread headers, the new
text of the mail (quoted history and signature stripped), the attachments.
``normalize`` turns that into the ``Envelope`` the core gets.

Bad input never crashes and never loses text: unknown or lying charsets fall
back to UTF-8, then cp1252, then Latin-1 (which cannot fail); broken MIME is
read as far as the standard library's parser got; headers that do not parse
are decoded best-effort.  Only a mail with no usable From address is
rejected (``MailRejected``): there is nobody to answer.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses

from mailparser_reply import EmailReplyParser

from edge.media.html import html_to_text
from tasks.schemas import Attachment, Envelope, ReplyRoute, new_message_id

__all__ = [
    "CHANNEL",
    "MailPart",
    "MailRejected",
    "ParsedMail",
    "decode_text",
    "delivery_key",
    "message_from_fields",
    "normalize",
    "parse_bytes",
    "parse_mail",
    "reply_subject",
    "session_id_for",
    "strip_reply",
]

CHANNEL = "email"
MAX_ATTACHMENTS = 10
# The reply parser runs regexes over the whole body; bound the input so a huge mail cannot stall a worker.
REPLY_PARSE_LIMIT = 100_000
_MSGID = re.compile(r"<[^<>\s]{1,500}>")
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\"\\]{1,64}@[^\s@<>()\[\],;:\"\\]{1,253}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")  # C0 and C1: the stdlib cannot fold a header holding C1
_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|antw|fwd?|wg)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
# Headers worth keeping when a webhook hands us parsed fields instead of the raw mail.
THREAD_HEADERS = (
    "From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To", "References", "Auto-Submitted",
    "Precedence", "X-Autoreply", "X-Autorespond", "Return-Path", "List-Id", "List-Unsubscribe", "List-Post",
)
# A webhook's parsed fields lose the MIME structure: the original Content-Type rides along in this header,
# so a delivery-status report (multipart/report) is still known for one (a sender setting it only stops
# their own mail being answered).
ORIGINAL_TYPE = "X-Switchboard-Original-Content-Type"
# Senders that are the mail system itself (RFC 3834 §2, RFC 5321 §4.5.5): bounces and reports.
_SYSTEM_SENDERS = re.compile(r"(mailer-daemon|postmaster|mail-daemon|bounces?|no-?reply)(?:[+-][^@]*)?@", re.I)


class MailRejected(ValueError):
    """The mail cannot be answered (no usable sender); the reason is said to whoever delivered it."""


@dataclass(frozen=True)
class MailPart:
    """An attachment's bytes, before it is stored somewhere a converter can fetch it."""

    name: str
    mime: str
    data: bytes


@dataclass(frozen=True)
class ParsedMail:
    sender: str  # lowercased address: who we answer and whose session it is
    sender_name: str
    recipients: tuple[str, ...]  # To and Cc addresses
    subject: str
    message_id: str | None  # with angle brackets, as in the header
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str  # the new text: quoted history and signature stripped
    full_text: str  # the whole body as text
    attachments: tuple[MailPart, ...] = ()
    skipped_attachments: int = 0  # beyond MAX_ATTACHMENTS
    # Why it must not be answered (RFC 3834: an auto-reply, a bounce, a report, list mail), or None.
    not_answered: str | None = None
    defects: tuple[str, ...] = field(default=())

    @property
    def thread_root(self) -> str | None:
        """The thread's first message: the first References id, else In-Reply-To, else this mail."""
        return self.references[0] if self.references else (self.in_reply_to or self.message_id)

    @property
    def starts_thread(self) -> bool:
        return not self.references and not self.in_reply_to

    @property
    def fingerprint(self) -> str:
        """Stable across delivery paths when a mail has no Message-ID (dedupe fallback)."""
        digest = hashlib.sha256()
        for part in (self.sender, self.subject, self.full_text, *(a.name for a in self.attachments)):
            digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
        return digest.hexdigest()[:32]


# --- decoding ------------------------------------------------------------------


# Codecs a mail may name that are not character sets: they read backslash escapes or shifted base64 out of
# the bytes, and so can make any code point, lone surrogates included (``\ud800`` in a unicode_escape body
# crashed tokenisation; a utf-7 encoded word made a subject no reply could be built from).
UNSAFE_CODECS = frozenset({"unicode-escape", "raw-unicode-escape", "utf-7", "punycode", "idna", "undefined"})
_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD: it can be encoded, stored, tokenised, mailed."""
    return _SURROGATE.sub("\ufffd", text)


def _safe_codec(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        name = codecs.lookup(charset).name
    except (LookupError, ValueError):
        return None
    return None if name in UNSAFE_CODECS else name


def decode_text(payload: bytes, declared: str | None) -> str:
    """Bytes to valid text whatever the charset claims: declared (if it is a character set), then UTF-8, then
    cp1252, then Latin-1."""
    for charset in (_safe_codec(declared), "utf-8", "cp1252"):
        if not charset:
            continue
        try:
            return valid_unicode(payload.decode(charset))
        except (LookupError, UnicodeError, ValueError):
            continue
    return payload.decode("latin-1")


def _clean(value: str) -> str:
    """One line of valid text: folded headers unfolded, control characters (CR/LF included) turned into
    spaces, lone surrogates (an encoded word in utf-7 can make them) replaced."""
    return valid_unicode(re.sub(r"\s+", " ", _CONTROL.sub(" ", value)).strip())


def _header(msg: Message, name: str) -> str:
    """A header as text; a header the parser chokes on is decoded by hand, never raised."""
    try:
        value = msg.get(name)
        return _clean(str(value)) if value is not None else ""
    except Exception:  # the stdlib header parser has raised on odd input before
        pass
    for key, raw in msg.raw_items() if isinstance(msg, EmailMessage) else msg.items():
        if key.lower() == name.lower():
            try:
                return _clean(str(make_header(decode_header(str(raw)))))
            except Exception:
                return _clean(str(raw))
    return ""


def _all_headers(msg: Message, name: str) -> list[str]:
    try:
        return [_clean(str(v)) for v in msg.get_all(name) or []]
    except Exception:
        return [h for h in [_header(msg, name)] if h]


def _address(value: str) -> tuple[str, str]:
    for display, addr in getaddresses([value]):
        addr = addr.strip().lower()
        if _ADDRESS.match(addr) and len(addr) <= 254:
            return _clean(display), addr
    return "", ""


def _angle_address(msg: Message) -> str:
    """The ``<addr>`` ending the From header as it was sent, before any decoding; empty if there is none."""
    raw = next((str(v) for k, v in (msg.raw_items() if isinstance(msg, EmailMessage) else msg.items())
                if k.lower() == "from"), "")
    found = re.search(r"<([^<>\s]+)>\s*\Z", raw)
    addr = found.group(1).lower() if found else ""
    return addr if _ADDRESS.match(addr) and len(addr) <= 254 else ""


def _message_ids(value: str) -> list[str]:
    return _MSGID.findall(value or "")


# --- body ----------------------------------------------------------------------


def strip_reply(text: str) -> str:
    """The new part of a reply: quoted history and signature removed (mail-parser-reply).

    Falls back to the whole text when the library leaves nothing (a mail that
    is only a quote) — better a long prompt than an empty one.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    head = text[:REPLY_PARSE_LIMIT]
    try:
        replies = EmailReplyParser(languages=["en", "de", "fr", "es", "it", "nl"]).read(head).replies
        latest = replies[0].body if replies else ""
    except Exception:  # a third-party regex library: never fail intake on it
        latest = ""
    latest = "\n".join(line for line in latest.split("\n") if not line.startswith(">")).strip()
    return latest or text.strip()


def _leaves(part: Message) -> Iterator[Message]:
    """Non-multipart parts in order; a multipart without a usable boundary counts as one leaf."""
    if part.is_multipart():
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    yield from _leaves(sub)
            return
    yield part


def _part_bytes(part: Message) -> bytes:
    if part.get_content_maintype() == "message":
        payload = part.get_payload()
        try:
            inner = payload[0] if isinstance(payload, list) else payload
            return inner.as_bytes() if isinstance(inner, Message) else str(inner).encode("utf-8", "replace")
        except Exception:
            return str(part.get_payload()).encode("utf-8", "replace")
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _part_text(part: Message) -> str:
    return decode_text(_part_bytes(part), part.get_content_charset())


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    return _clean(str(name))[:255] if name else None


def _is_attachment(part: Message) -> bool:
    disposition = (part.get_content_disposition() or "").lower()
    if disposition == "attachment" or _filename(part):
        return True
    return part.get_content_maintype() not in ("text", "multipart")


def _is_decoration(part: Message) -> bool:
    """Inline images an HTML body embeds (logos in signatures): not something the person sent us."""
    disposition = (part.get_content_disposition() or "").lower()
    return part.get_content_maintype() == "image" and bool(part.get("Content-ID")) and disposition != "attachment"


def _body(msg: Message, leaves: list[Message]) -> tuple[str, Message | None]:
    """The body as text: plain text preferred, HTML converted when it is all there is."""
    chosen: Message | None = None
    if isinstance(msg, EmailMessage):
        try:
            chosen = msg.get_body(preferencelist=("plain", "html"))
        except Exception:
            chosen = None
    if chosen is None or chosen.is_multipart():
        texts = [p for p in leaves if not _is_attachment(p)]
        plain = [p for p in texts if p.get_content_subtype() == "plain"]
        html = [p for p in texts if p.get_content_subtype() == "html"]
        candidates = plain or html or texts
        chosen = candidates[0] if candidates else None
    if chosen is None:
        return "", None
    text = _part_text(chosen)
    if chosen.get_content_subtype() == "html":
        text = html_to_text(text)
    return text.replace("\r\n", "\n").strip(), chosen


def not_to_answer(msg: Message, sender: str) -> str | None:
    """The reason a mail must get no automatic answer (RFC 3834 §2), as a metric label; None to answer it.

    Answering these makes mail loops, backscatter to forged senders, and replies to a whole list."""
    auto = _header(msg, "Auto-Submitted").lower()
    if auto and auto.split(";")[0].strip() != "no":
        return "auto_submitted"
    if _header(msg, "X-Autoreply") or _header(msg, "X-Autorespond"):
        return "auto_submitted"
    if _header(msg, "Precedence").lower() in ("bulk", "junk", "list", "auto_reply"):
        return "precedence"
    if _header(msg, "List-Id") or _header(msg, "List-Unsubscribe") or _header(msg, "List-Post"):
        return "list"
    if any(path.replace(" ", "") == "<>" for path in _all_headers(msg, "Return-Path")):
        return "bounce"  # the null reverse-path: only the mail system sends with it
    if _SYSTEM_SENDERS.match(sender):
        return "system_sender"
    content_type = msg.get_content_type() if hasattr(msg, "get_content_type") else ""
    if content_type == "multipart/report" or _header(msg, ORIGINAL_TYPE).lower().startswith("multipart/report"):
        return "report"
    return None


def parse_bytes(raw: bytes) -> Message:
    """Raw MIME to a message; the modern parser first, the lenient legacy one if that ever raises."""
    try:
        return BytesParser(policy=policy.default).parsebytes(raw)
    except Exception:
        return BytesParser(policy=policy.compat32).parsebytes(raw)


def parse_mail(source: bytes | Message) -> ParsedMail:
    """Read a mail; raise ``MailRejected`` only when there is no usable From address."""
    msg = source if isinstance(source, Message) else parse_bytes(source)
    defects = [type(d).__name__ for d in getattr(msg, "defects", [])]
    display, sender = _address(_header(msg, "From"))
    if not sender:  # a display name that decodes to "<", "," or quotes confuses the parser: the raw angle-addr
        display, sender = "", _angle_address(msg)
    if not sender:
        raise MailRejected("the mail has no usable From address")
    recipients = tuple(
        addr.lower() for value in _all_headers(msg, "To") + _all_headers(msg, "Cc")
        for _, addr in getaddresses([value]) if _ADDRESS.match(addr.lower())
    )
    leaves = list(_leaves(msg))
    full_text, body_part = _body(msg, leaves)
    attachments: list[MailPart] = []
    skipped = 0
    for part in leaves:
        if part is body_part or not _is_attachment(part) or _is_decoration(part):
            continue
        if len(attachments) >= MAX_ATTACHMENTS:
            skipped += 1
            continue
        mime = part.get_content_type() if re.match(r"^[\w.+-]+/[\w.+-]+\Z", part.get_content_type()) else (
            "application/octet-stream"
        )
        default_name = f"attachment-{len(attachments) + 1}" + (".eml" if mime == "message/rfc822" else "")
        attachments.append(MailPart(_filename(part) or default_name, mime, _part_bytes(part)))
    message_ids = _message_ids(_header(msg, "Message-ID"))
    in_reply_to = _message_ids(_header(msg, "In-Reply-To"))
    return ParsedMail(
        sender=sender,
        sender_name=display,
        recipients=recipients,
        subject=_header(msg, "Subject")[:998],
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=tuple(_message_ids(" ".join(_all_headers(msg, "References")))),
        text=strip_reply(full_text) if full_text else "",
        full_text=full_text,
        attachments=tuple(attachments),
        skipped_attachments=skipped,
        not_answered=not_to_answer(msg, sender),
        defects=tuple(defects),
    )


def message_from_fields(
    headers: Sequence[tuple[str, str]], text: str | None, html: str | None, files: Sequence[MailPart]
) -> EmailMessage:
    """An ``EmailMessage`` from a webhook's parsed fields, so both paths share ``parse_mail``.

    Only the headers threading and answering need are copied; one that does
    not parse is dropped (a missing From is then rejected by ``parse_mail``).
    """
    msg = EmailMessage(policy=policy.default)
    wanted = {h.lower() for h in THREAD_HEADERS}
    for name, value in headers:
        if name.lower() == "content-type" and ORIGINAL_TYPE.lower() not in {k.lower() for k in msg}:
            name = ORIGINAL_TYPE
        elif name.lower() == ORIGINAL_TYPE.lower():
            continue  # only ever set here, from the webhook's own Content-Type
        if (name.lower() in wanted or name == ORIGINAL_TYPE) and name.lower() not in {k.lower() for k in msg}:
            try:
                msg[name] = _clean(value)
            except Exception:  # a header the registry cannot parse is dropped, not fatal
                continue
    if text:
        msg.set_content(text)
        if html:
            msg.add_alternative(html, subtype="html")
    elif html:
        msg.set_content(html, subtype="html")
    for part in files:
        maintype, _, subtype = part.mime.partition("/")
        if maintype == "text":
            msg.add_attachment(decode_text(part.data, None), subtype=subtype or "plain", filename=part.name)
        elif part.mime == "message/rfc822":
            msg.add_attachment(part.data, maintype="application", subtype="octet-stream", filename=part.name)
        else:
            msg.add_attachment(part.data, maintype=maintype or "application", subtype=subtype or "octet-stream",
                               filename=part.name)
    return msg


# --- the envelope --------------------------------------------------------------


def session_id_for(sender: str, thread_root: str | None, fingerprint: str) -> str:
    """``email:<sender>#<thread root>``: a reply continues its thread, a new subject starts fresh."""
    root = (thread_root or fingerprint).strip("<>")
    session = f"{CHANNEL}:{sender}#{root}"
    if len(session) > 256:
        session = f"{CHANNEL}:{sender[:200]}#{hashlib.sha256(root.encode()).hexdigest()[:32]}"
    return session


def delivery_key(parsed: ParsedMail) -> str:
    """Dedupe key: the Message-ID (scoped to the sender, so a forged id cannot suppress someone else's mail)."""
    mid = parsed.message_id or f"sha256:{parsed.fingerprint}"
    key = f"{CHANNEL}:{parsed.sender}:{mid}"
    return key if len(key) <= 255 else f"{CHANNEL}:{hashlib.sha256(key.encode()).hexdigest()}"


def reply_subject(subject: str) -> str:
    """``Re: <subject>`` once, whatever prefixes the mail already had; never a line break."""
    subject = _clean(subject)
    stripped = _REPLY_PREFIX.sub("", subject)
    return f"Re: {stripped}" if stripped else "Re: your message"


def normalize(
    parsed: ParsedMail,
    *,
    source: str,
    callback_url: str,
    our_address: str,
    attachments: Sequence[Attachment] = (),
    max_text_chars: int = 16_000,
    thread: bool = True,
) -> Envelope:
    """The envelope the core answers: the new text, the subject on a thread's first mail, files noted.

    ``thread=False`` (a sender nobody vouched for): the mail starts a session of its own, whatever thread it
    names, so it can never write into an existing conversation."""
    parts: list[str] = []
    if parsed.subject and parsed.starts_thread:
        parts.append(f"Subject: {parsed.subject}")
    body = parsed.text
    notes = []  # stored attachments are converted to text by the convert step; skipped ones are named here
    if parsed.skipped_attachments:
        notes.append(f"[{parsed.skipped_attachments} more attachments — not read]")
    budget = max_text_chars - sum(len(n) + 1 for n in notes) - sum(len(p) + 2 for p in parts) - 2
    if len(body) > budget:
        body = body[: max(budget - 14, 0)].rstrip() + "\n[…truncated]"
    if body:
        parts.append(body)
    if notes:
        parts.append("\n".join(notes))
    text = "\n\n".join(parts) or (f"Subject: {parsed.subject}" if parsed.subject else "(an empty mail)")
    references = [*parsed.references]
    if parsed.in_reply_to and parsed.in_reply_to not in references:
        references.append(parsed.in_reply_to)
    return Envelope(
        message_id=new_message_id(),
        channel=CHANNEL,
        channel_message_id=(parsed.message_id or f"sha256:{parsed.fingerprint}")[:256],
        sender=parsed.sender,
        session_id=session_id_for(parsed.sender, parsed.thread_root if thread else parsed.message_id,
                                  parsed.fingerprint),
        text=text[:max_text_chars],
        attachments=tuple(attachments),
        metadata={
            "source": source,
            "subject": parsed.subject,
            "from_name": parsed.sender_name,
            "message_id": parsed.message_id,
            "defects": list(parsed.defects[:20]),
        },
        reply=ReplyRoute(
            callback_url=callback_url,
            context={
                "to": parsed.sender,
                "to_name": parsed.sender_name,
                "from": our_address,
                "subject": reply_subject(parsed.subject),
                "message_id": parsed.message_id,
                "references": references if len(references) <= 20 else [references[0], *references[-19:]],
            },
        ),
    )
