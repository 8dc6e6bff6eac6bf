"""The email channel: Mailgun and SendGrid webhooks, the IMAP poller's intake, SMTP replies.

Routes (all under ``/v1/channels/email/``):
- ``POST mailgun`` and ``POST mailgun/mime`` — Mailgun route (HMAC signature, fresh timestamp, unseen token, else 403);
- ``POST sendgrid`` — SendGrid Inbound Parse (basic auth password ``SENDGRID_INBOUND_SECRET``, else 401/403);
- ``GET attachments/<token>`` — a stored attachment's bytes, for converters (allowed hosts only);
- replies arrive on the shared ``POST callback`` and leave over SMTP (``send``).

These routes take mails up to ``MAX_MAIL_BYTES`` (a per-request limit: the
rest of the edge keeps ``MAX_BODY_BYTES``); larger ones get 413.  Form
fields are read as bytes (Werkzeug would decode a raw mail as UTF-8 and
lose any 8-bit body in another charset).  Answers: 200 queued (or a
repeated delivery of a queued mail), 200 ``ignored`` for auto-replies (mail
loops), 422 a mail with no usable sender (dead-lettered, logged), 503 when
the queue cannot take it (the provider retries).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable
from email.message import Message
from urllib.parse import parse_qsl

import redis
from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header

from edge.channels.base import CallbackReply, Channel
from edge.channels.email.auth import SenderCheck, from_authentication_results, from_mailgun, from_sendgrid
from edge.channels.email.mailgun import SignatureRejected, message_from_mailgun, verify_signature
from edge.channels.email.mailgun import recipient as mailgun_recipient
from edge.channels.email.normalize import (
    MailPart,
    MailRejected,
    ParsedMail,
    delivery_key,
    normalize,
    parse_bytes,
    parse_mail,
)
from edge.channels.email.sendgrid import credentials_ok, message_from_sendgrid
from edge.channels.email.sendgrid import recipient as sendgrid_recipient
from edge.channels.email.smtp import build_reply, send_mail
from edge.errors import BadRequest, Forbidden, NotFound, UnsupportedMedia
from edge.file_store import FileStore
from tasks.schemas import Attachment
from telemetry import metrics

__all__ = ["EmailChannel", "IngestResult"]

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[0-9a-f]{32}\Z")
_KIND = "mail"  # its files in FILES_DIR/mail
# Mail that gets no answer, by the label switchboard_mail_ignored_total counts it under (RFC 3834 §2).
IGNORED = {
    "auto_submitted": "auto-generated mail (Auto-Submitted, X-Autoreply) is not answered",
    "precedence": "bulk, list or junk mail (Precedence) is not answered",
    "list": "mailing-list mail (List-Id, List-Unsubscribe, List-Post) is not answered",
    "bounce": "a bounce (empty Return-Path) is not answered",
    "system_sender": "mail from the mail system (MAILER-DAEMON, postmaster, bounces, no-reply) is not answered",
    "report": "a delivery or disposition report (multipart/report) is not answered",
    "ourselves": "mail from ourselves",
}
Fields = dict[str, bytes]


class _BytesMultiPartParser(MultiPartParser):
    """Multipart fields kept byte for byte: Latin-1 decodes any byte, and we encode it back."""

    def get_part_charset(self, headers: object) -> str:
        return "latin-1"


class IngestResult:
    """What became of one mail: queued (maybe a repeat), or ignored with a reason."""

    def __init__(self, status: str, message_id: str | None = None, session_id: str | None = None,
                 reason: str | None = None) -> None:
        self.status, self.message_id, self.session_id, self.reason = status, message_id, session_id, reason

    def body(self) -> dict[str, str | None]:
        return {"status": self.status, "message_id": self.message_id, "session_id": self.session_id,
                **({"reason": self.reason} if self.reason else {})}


class EmailChannel(Channel):
    name = "email"

    # --- intake, shared by the webhooks and the IMAP poller ------------------

    def ingest(self, mail: bytes | Message, *, source: str, our_address: str = "",
               check: Callable[[Message, str], SenderCheck] | None = None) -> IngestResult:
        """Parse, judge the sender, store attachments, queue durably (dedupe on Message-ID).

        ``check`` gives the receiving provider's verdict on the sender (``email_auth``); without one, the
        mail's ``Authentication-Results`` from ``EMAIL_AUTHSERV_ID`` (IMAP). Raises ``MailRejected`` for a
        mail nobody can be answered for (after recording it as a dead letter), ``Unavailable``/Redis errors
        when the queue cannot take it — the caller must then not acknowledge the mail.
        """
        settings = self.ctx.settings
        if isinstance(mail, bytes):
            mail = parse_bytes(mail)
        try:
            parsed = parse_mail(mail)
        except MailRejected as exc:
            try:
                raw = mail if isinstance(mail, bytes) else mail.as_bytes()
            except Exception:  # only a label for the dead letter
                raw = b""
            label = f"{source}:sha256:{hashlib.sha256(raw).hexdigest()[:16]}"
            self.ctx.dead_letters.add("mail", label, f"{exc} ({len(raw)} bytes)")
            log.warning("email: rejected mail %s: %s", label, exc)
            raise
        ours = {a.lower() for a in (settings.smtp_from, our_address) if a}
        ignored = parsed.not_answered or ("ourselves" if parsed.sender in ours else None)
        if ignored is not None:
            reason = IGNORED[ignored]
            metrics.inc("switchboard_mail_ignored_total", reason=ignored)
            log.info("email: ignored %s from %s: %s", parsed.message_id, parsed.sender, reason)
            return IngestResult("ignored", reason=reason)
        from_domain = parsed.sender.rpartition("@")[2]
        sender = (check(mail, from_domain) if check is not None
                  else from_authentication_results(mail, settings.email_authserv_id, from_domain))
        if sender.verdict == "fail" or (sender.verdict == "none" and settings.email_unverified == "refuse"):
            return self._unanswered(parsed, sender)
        key = delivery_key(parsed)
        earlier = self._seen(key)
        if earlier is not None:
            return IngestResult("duplicate", earlier[0], earlier[1])
        attachments = [self.store_attachment(part) for part in parsed.attachments]
        our = settings.smtp_from or our_address or (parsed.recipients[0] if parsed.recipients else "")
        envelope = normalize(parsed, source=source, callback_url=self.callback_url, our_address=our,
                             attachments=attachments, max_text_chars=settings.max_text_chars,
                             thread=sender.verdict == "pass" or settings.email_unverified == "thread")
        accepted = self.accept(envelope, key)
        return IngestResult("duplicate" if accepted.duplicate else "queued", accepted.message_id, accepted.session_id)

    def _unanswered(self, parsed: ParsedMail, sender: SenderCheck) -> IngestResult:
        """A mail whose From is forged, or unverified where EMAIL_UNVERIFIED=refuse: a dead letter, no answer
        (answering would mail a stranger's words to whoever the From names)."""
        label = "sender_failed" if sender.verdict == "fail" else "sender_unverified"
        reason = (f"the sender {parsed.sender} could not be verified ({sender.detail})" if sender.verdict == "fail"
                  else f"the sender {parsed.sender} has no verdict and EMAIL_UNVERIFIED=refuse ({sender.detail})")
        self.ctx.dead_letters.add("mail", f"{parsed.sender}:{parsed.message_id or parsed.fingerprint}", reason)
        metrics.inc("switchboard_mail_ignored_total", reason=label)
        log.warning("email: not answered %s: %s", parsed.message_id, reason)
        return IngestResult("refused", reason=reason)

    def _seen(self, key: str) -> tuple[str, str] | None:
        """A delivery seen before, checked before storing its attachments again (``accept`` re-checks)."""
        message_id = self.ctx.redis.get(self.ctx.keys.idempotency(self.name, key))
        if not message_id:
            return None
        record = self.ctx.messages.get(str(message_id))
        return (str(message_id), record.session_id if record else "")

    def store_attachment(self, part: MailPart) -> Attachment:
        """Keep the bytes for ``EMAIL_ATTACHMENT_TTL_SECONDS`` under an unguessable token (edge/file_store.py)."""
        token = secrets.token_hex(16)
        self._files().put(_KIND, token, part.data, mime=part.mime, name=part.name,
                          ttl=self.ctx.settings.email_attachment_ttl_seconds)
        base = self.ctx.settings.internal_base_url.rstrip("/")
        return Attachment(part.mime, len(part.data), part.name, f"{base}/v1/channels/email/attachments/{token}")

    def _files(self) -> FileStore:
        if self.ctx.files is None:
            raise RuntimeError("this app stores no files")
        return self.ctx.files

    # --- webhooks ------------------------------------------------------------

    def blueprint(self) -> Blueprint:
        blueprint = Blueprint("email", __name__)
        settings = self.ctx.settings

        @blueprint.before_request
        def _mail_sized_limits() -> None:
            """Mails are bigger than API calls: this blueprint's own body and form-field limits."""
            request.max_content_length = settings.max_mail_bytes
            request.max_form_memory_size = settings.max_mail_bytes

        @blueprint.post("/v1/channels/email/mailgun")
        @blueprint.post("/v1/channels/email/mailgun/mime")  # Mailgun posts the raw mail to URLs ending in "mime"
        def mailgun() -> ResponseReturnValue:
            if not settings.mailgun_signing_key:
                raise Forbidden("the Mailgun route is not configured (MAILGUN_SIGNING_KEY)")
            fields, files = _read_form(settings.max_mail_bytes)

            def field(name: str) -> str:
                return fields.get(name, b"").decode("utf-8", "replace")

            try:
                verify_signature(settings.mailgun_signing_key, field("timestamp"), field("token"),
                                 field("signature"), now=time.time(), max_age=settings.mailgun_max_age)
            except SignatureRejected as exc:
                raise Forbidden(str(exc)) from exc
            token_key = self.ctx.keys.mailgun_token(hashlib.sha256(fields["token"]).hexdigest())
            if not self.ctx.redis.set(token_key, "1", nx=True, ex=int(settings.mailgun_max_age * 2) + 60):
                raise Forbidden("this Mailgun token was used before (replay)")
            return self._answer(lambda: self.ingest(
                message_from_mailgun(fields, files), source="mailgun", our_address=mailgun_recipient(fields),
                check=lambda msg, domain: from_mailgun(fields, msg, domain)), release=token_key)

        @blueprint.post("/v1/channels/email/sendgrid")
        def sendgrid() -> ResponseReturnValue:
            if not settings.sendgrid_inbound_secret:
                raise Forbidden("the SendGrid route is not configured (SENDGRID_INBOUND_SECRET)")
            authorization = request.headers.get("Authorization")
            if not authorization:
                challenge = jsonify({"error": "basic auth required: put the password in the Inbound Parse URL"})
                challenge.headers["WWW-Authenticate"] = 'Basic realm="switchboard-email"'
                return challenge, 401
            if not credentials_ok(authorization, settings.sendgrid_inbound_secret):
                raise Forbidden("wrong SendGrid inbound credentials")
            fields, files = _read_form(settings.max_mail_bytes)
            return self._answer(lambda: self.ingest(
                message_from_sendgrid(fields, files), source="sendgrid", our_address=sendgrid_recipient(fields),
                check=lambda _msg, domain: from_sendgrid(fields, domain)))

        @blueprint.get("/v1/channels/email/attachments/<token>")
        def attachment(token: str) -> ResponseReturnValue:
            if not self._caller_allowed():
                raise Forbidden("attachments are served to SWITCHBOARD_ALLOWED_HOSTS only")
            stored = self._files().get(_KIND, token) if _TOKEN.match(token) else None
            if stored is None:
                raise NotFound("no such attachment (or it expired)")
            response = Response(stored.data, mimetype=stored.mime)
            response.headers["Content-Disposition"] = _disposition(stored.name)
            response.headers["X-Content-Type-Options"] = "nosniff"
            return response

        return blueprint

    def _answer(self, ingest: Callable[[], IngestResult], release: str | None = None) -> ResponseReturnValue:
        try:
            result = ingest()
        except MailRejected as exc:
            return jsonify({"error": str(exc)}), 422
        except Exception:
            if release:  # the provider retries with the same token: let that retry in
                with contextlib.suppress(redis.RedisError):
                    self.ctx.redis.delete(release)
            raise
        return jsonify(result.body()), 200

    def _caller_allowed(self) -> bool:
        try:
            address = ipaddress.ip_address(request.remote_addr or "")
        except ValueError:
            return False
        return any(address in network for network in self.ctx.policy.networks)

    # --- replies ---------------------------------------------------------------

    def send(self, reply: CallbackReply) -> None:
        """Reply in the person's thread over SMTP (retried on 4xx/network, dead-lettered on 5xx)."""
        settings = self.ctx.settings
        message = build_reply(reply.context, reply.text, from_address=settings.smtp_from)
        send_mail(message, settings)
        log.info("email: replied to %s for %s", message["To"], reply.message_id)


def _disposition(name: str) -> str:
    safe = re.sub(r"[^\w.+-]", "_", name)[:100] or "attachment"
    return f'attachment; filename="{safe}"'


def _read_form(limit: int) -> tuple[Fields, list[MailPart]]:
    """The posted form with every field as bytes, and the uploaded files, within ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()
    mimetype, options = parse_options_header(request.headers.get("Content-Type", ""))
    fields: Fields = {}
    files: list[MailPart] = []
    if mimetype == "multipart/form-data":
        boundary = options.get("boundary", "")
        if not boundary:
            raise BadRequest("multipart body without a boundary")
        parser = _BytesMultiPartParser(max_form_memory_size=limit, max_form_parts=1000)
        try:
            form, uploaded = parser.parse(request.stream, boundary.encode("latin-1"), request.content_length)
        except ValueError as exc:
            raise BadRequest(f"malformed multipart body: {exc}") from exc
        fields = {name: value.encode("latin-1") for name, value in form.items()}
        files = [_part(name, storage) for name, storage in uploaded.items(multi=True)]
    elif mimetype == "application/x-www-form-urlencoded":
        raw = request.stream.read(limit + 1)
        if len(raw) > limit:
            raise RequestEntityTooLarge()
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
        fields = {name.encode("latin-1").decode("utf-8", "replace"): value.encode("latin-1") for name, value in pairs}
    else:
        raise UnsupportedMedia("send multipart/form-data or application/x-www-form-urlencoded")
    return fields, files


def _part(field_name: str, storage: FileStorage) -> MailPart:
    mime = storage.mimetype if re.match(r"^[\w.+-]+/[\w.+-]+\Z", storage.mimetype or "") else (
        "application/octet-stream"
    )
    return MailPart(name=(storage.filename or field_name)[:255], mime=mime, data=storage.read())
