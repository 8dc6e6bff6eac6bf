"""SendGrid Inbound Parse: credentials check and form fields → mail, pure functions.

Inbound Parse has no shared-secret signature of its own, so the route is
protected with HTTP basic auth: the parse URL carries the password
(``https://sendgrid:<SENDGRID_INBOUND_SECRET>@host/v1/channels/email/sendgrid``,
as Rails' Action Mailbox does) — basic auth rather than a secret path
segment because paths end up in access logs.  Both modes are read: raw
(``email`` holds the whole MIME mail) and parsed (``headers``, ``text``,
``html``, ``charsets``, ``attachmentN`` files).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from email import policy
from email.message import Message
from email.parser import HeaderParser

from edge.channels.email.normalize import MailPart, decode_text, message_from_fields, parse_bytes

__all__ = ["credentials_ok", "message_from_sendgrid", "recipient"]


def credentials_ok(authorization: str | None, secret: str) -> bool:
    """Basic auth with any user name and ``secret`` as the password, compared in constant time."""
    if not secret or not authorization or not authorization.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    _, sep, password = decoded.partition(":")
    return bool(sep) and hmac.compare_digest(password.encode(), secret.encode())


def _charsets(fields: Mapping[str, bytes]) -> dict[str, str]:
    try:
        data = json.loads(fields.get("charsets", b"{}").decode("utf-8", "replace"))
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def message_from_sendgrid(fields: Mapping[str, bytes], files: Sequence[MailPart]) -> Message:
    """The mail SendGrid posted, raw or parsed."""
    if fields.get("email"):
        return parse_bytes(fields["email"])
    charsets = _charsets(fields)

    def text(name: str) -> str:
        return decode_text(fields.get(name, b""), charsets.get(name, "utf-8"))

    headers: list[tuple[str, str]] = []
    try:
        parsed = HeaderParser(policy=policy.compat32).parsestr(text("headers"))
        headers = [(str(k), str(v)) for k, v in parsed.items()]
    except Exception:  # a header block we cannot read: fall back to the plain fields
        headers = []
    names = {name.lower() for name, _ in headers}
    for field_name, header in (("from", "From"), ("to", "To"), ("subject", "Subject")):
        if header.lower() not in names and fields.get(field_name):
            headers.append((header, text(field_name)))
    return message_from_fields(headers, text("text"), text("html"), files)


def recipient(fields: Mapping[str, bytes]) -> str:
    """The address the person wrote to, from SendGrid's SMTP envelope."""
    try:
        envelope = json.loads(fields.get("envelope", b"{}").decode("utf-8", "replace"))
        to = envelope.get("to") or []
        return str(to[0]) if isinstance(to, list) and to else ""
    except (ValueError, AttributeError):
        return ""
