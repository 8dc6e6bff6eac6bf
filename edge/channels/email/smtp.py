"""Replies out over SMTP: a threaded plain-text mail, no header the model's text can touch.

``build_reply`` is pure (unit-tested without a server); ``send_mail`` speaks
SMTP and sorts failures into the channel's two kinds: worth retrying
(connection refused, timeouts, 4xx) and not (5xx: unknown recipient,
rejected sender, …), which the core dead-letters with the reason.

Headers are set through ``EmailMessage`` with ``policy.default``, which
refuses CR/LF in a header value; every value that came from outside (the
subject, the names, the thread ids) is also reduced to one clean line first,
so a reply can never smuggle a header.  The model's text goes only into the
body.  No HTML part: the model writes plain text, and an HTML part would be
one more place for its text to be interpreted.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, NoReturn

from edge.channels.base import PermanentSendError, TemporarySendError
from edge.channels.email.normalize import reply_subject, valid_unicode
from tasks.settings import Settings

__all__ = ["build_reply", "send_mail"]

_MSGID = re.compile(r"^<[^<>\s]{1,500}>\Z")
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\"\\]{1,64}@[^\s@<>()\[\],;:\"\\]{1,253}$")
SECURITY = ("none", "starttls", "ssl")


def _one_line(value: object, limit: int = 200) -> str:
    """One line of valid text for a header. ``=?`` is broken up: the header registry would decode what looks
    like an encoded word again (one the mail's parser could not decode stayed literal), into bytes it
    cannot fold, and no reply could be built."""
    text = re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", str(value or ""))).strip()
    return valid_unicode(text.replace("=?", "= ?"))[:limit]


def _address(addr: object, name: object = "") -> Address:
    text = _one_line(addr, 254).lower()
    if not _ADDRESS.match(text):
        raise PermanentSendError(f"not a mail address: {text!r}")
    local, _, domain = text.rpartition("@")
    try:
        return Address(display_name=_one_line(name, 100), username=local, domain=domain)
    except (ValueError, IndexError) as exc:
        raise PermanentSendError(f"not a mail address: {text!r}") from exc


def build_reply(context: Mapping[str, Any], text: str, *, from_address: str) -> EmailMessage:
    """The reply to the mail described by ``context`` (what ``normalize`` put in ``Envelope.reply``)."""
    sender = _address(from_address or context.get("from"), "")
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = _address(context.get("to"), context.get("to_name", ""))
    msg["Subject"] = reply_subject(_one_line(context.get("subject"), 900))
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=sender.domain)
    original = _one_line(context.get("message_id"), 510)
    references: Sequence[Any] = context.get("references") or []
    ids = [r for r in (_one_line(r, 510) for r in references) if _MSGID.match(r)][:20]
    if _MSGID.match(original):
        msg["In-Reply-To"] = original
        if original not in ids:
            ids.append(original)
    if ids:
        msg["References"] = " ".join(ids)
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: other robots must not answer us (mail loops)
    body = valid_unicode(text).replace("\r\n", "\n").replace("\r", "\n")
    msg.set_content(body if body.endswith("\n") else body + "\n")
    return msg


def _connect(settings: Settings) -> smtplib.SMTP:
    security = settings.smtp_security.lower()
    if security not in SECURITY:
        raise PermanentSendError(f"SMTP_SECURITY must be one of {', '.join(SECURITY)}, not {security!r}")
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if security == "ssl":
        client = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout,
                                  context=context)
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout)
    try:
        client.ehlo()
        if security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if settings.smtp_username:
            client.login(settings.smtp_username, settings.smtp_password)
    except BaseException:
        client.close()
        raise
    return client


def send_mail(msg: EmailMessage, settings: Settings) -> None:
    """Send ``msg``; TemporarySendError for what a retry may fix, PermanentSendError for what it will not."""
    if not settings.smtp_host:
        raise PermanentSendError("SMTP_HOST is not set: mail replies cannot be sent")
    try:
        client = _connect(settings)
        try:
            refused = client.send_message(msg)
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    except smtplib.SMTPRecipientsRefused as exc:
        _raise_for_codes([code for code, _ in exc.recipients.values()], f"recipient refused: {exc.recipients}")
    except smtplib.SMTPAuthenticationError as exc:
        _raise_for_codes([exc.smtp_code], f"SMTP login failed ({exc.smtp_code}): {_text(exc.smtp_error)}")
    except smtplib.SMTPResponseException as exc:  # sender refused, data refused, …
        _raise_for_codes([exc.smtp_code], f"SMTP error {exc.smtp_code}: {_text(exc.smtp_error)}")
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentSendError(f"the SMTP server does not support this: {exc}") from exc
    except (smtplib.SMTPException, OSError) as exc:  # refused, reset, timeout, TLS failure
        raise TemporarySendError(f"SMTP server unreachable: {type(exc).__name__}: {exc}") from exc
    if refused:
        _raise_for_codes([code for code, _ in refused.values()], f"recipient refused: {refused}")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _raise_for_codes(codes: Sequence[int], reason: str) -> NoReturn:
    """4xx is temporary (greylisting, full mailbox, rate limits); 5xx and anything odd is permanent."""
    if codes and all(400 <= code < 500 for code in codes):
        raise TemporarySendError(reason)
    raise PermanentSendError(reason)
