"""Mailgun routes: signature check and form fields → mail, pure functions.

A Mailgun route that forwards to ``…/v1/channels/email/mailgun`` POSTs the
parsed mail (``body-plain``, ``message-headers``, ``attachment-N``) or, when
the URL ends in ``mime``, the raw mail as ``body-mime``; both carry
``timestamp``, ``token`` and ``signature`` = HMAC-SHA256(signing key,
timestamp + token).  The replay check (a token seen before) needs Redis and
lives in the channel.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from email.message import Message

from edge.channels.email.normalize import MailPart, decode_text, message_from_fields, parse_bytes

__all__ = ["SignatureRejected", "message_from_mailgun", "recipient", "verify_signature"]


class SignatureRejected(ValueError):
    """Forged, stale or malformed signature fields (403)."""


def verify_signature(
    signing_key: str, timestamp: str, token: str, signature: str, *, now: float, max_age: float
) -> None:
    """Raise ``SignatureRejected`` unless the HMAC matches and the timestamp is fresh."""
    if not (timestamp and token and signature):
        raise SignatureRejected("the Mailgun signature fields are missing")
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.strip().lower()):
        raise SignatureRejected("the Mailgun signature does not verify")
    try:
        age = now - float(timestamp)
    except ValueError as exc:
        raise SignatureRejected("the Mailgun timestamp is not a number") from exc
    if abs(age) > max_age:
        raise SignatureRejected(f"the Mailgun timestamp is {age:.0f}s old (MAILGUN_MAX_AGE is {max_age:.0f}s)")


def _text(fields: Mapping[str, bytes], name: str) -> str:
    return decode_text(fields.get(name, b""), "utf-8")


def message_from_mailgun(fields: Mapping[str, bytes], files: Sequence[MailPart]) -> Message:
    """The mail a Mailgun route posted, in either of its formats."""
    if fields.get("body-mime"):
        return parse_bytes(fields["body-mime"])
    headers: list[tuple[str, str]] = []
    try:
        pairs = json.loads(_text(fields, "message-headers") or "[]")
        headers = [(str(name), str(value)) for name, value in pairs]
    except (ValueError, TypeError):
        pass
    if not any(name.lower() == "from" for name, _ in headers):
        headers.append(("From", _text(fields, "from") or _text(fields, "sender")))
        headers.append(("Subject", _text(fields, "subject")))
    return message_from_fields(headers, _text(fields, "body-plain"), _text(fields, "body-html"), files)


def recipient(fields: Mapping[str, bytes]) -> str:
    """The address the person wrote to (the route's match): what the reply comes from."""
    return _text(fields, "recipient").split(",")[0].strip()
