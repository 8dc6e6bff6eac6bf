"""Twilio SMS/MMS: ``POST /v1/channels/twilio/sms`` in, the Twilio REST API out.

The webhook verifies ``X-Twilio-Signature``, answers at once with TwiML (empty,
or a configured acknowledgement) and queues the text; Twilio's retries of the
same ``MessageSid`` are dropped by ``accept``.  The core's reply comes back
through the channel callback and ``send`` texts it with the REST client, split
at paragraph, sentence or word boundaries when it is too long; each part is
recorded in Redis once sent, so a retry after a failed part never repeats an
earlier one.

Opt-out keywords (STOP, …) are never answered by the model: the number is
marked opted out (later replies to it are dropped) until START.  HELP gets
``TWILIO_SMS_HELP`` if set.  MMS media become attachments; while no helper
understands them the person is told so at once.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from collections.abc import Mapping
from typing import Literal

import requests
from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from edge.channels.base import CallbackReply, Channel, PermanentSendError, TemporarySendError
from edge.channels.splitting import split_text
from edge.channels.twilio.common import ROUTE_PREFIX, caller_session, require, twiml, verify_twilio_request
from edge.context import EdgeContext
from tasks.schemas import Attachment, Envelope, ReplyRoute, new_message_id
from tasks.settings import Settings

__all__ = ["CHANNEL", "TwilioSMS", "keyword", "media_attachments", "normalize", "rest_client", "split_message"]

log = logging.getLogger(__name__)

CHANNEL = "twilio-sms"
MAX_MEDIA = 10
EMPTY_REPLY = "Sorry, I have no answer to that."

# Twilio's (and the carriers') default keywords; the whole message must be the word.
OPT_OUT = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"})
OPT_IN = frozenset({"start", "unstop"})
HELP = frozenset({"help", "info"})
Keyword = Literal["stop", "start", "help"]

_MIME = re.compile(r"^[\w.+-]+/[\w.+-]+\Z")


def keyword(body: str, opt_out_type: str | None = None, *, opted_out: bool = False) -> Keyword | None:
    """STOP/START/HELP-style keywords; ``YES`` re-subscribes only someone who opted out."""
    if opt_out_type and opt_out_type.lower() in ("stop", "start", "help"):
        return opt_out_type.lower()  # type: ignore[return-value]  # Twilio's Advanced Opt-Out decided
    word = re.sub(r"[\s.!]+$", "", body.strip()).lower()
    if word in OPT_OUT:
        return "stop"
    if word in OPT_IN or (opted_out and word == "yes"):
        return "start"
    if word in HELP:
        return "help"
    return None


def media_attachments(form: Mapping[str, str]) -> tuple[Attachment, ...]:
    """``NumMedia``/``MediaUrlN``/``MediaContentTypeN`` as attachments fetched later by URL."""
    try:
        count = min(int(form.get("NumMedia") or 0), MAX_MEDIA)
    except ValueError:
        count = 0
    attachments = []
    for index in range(max(count, 0)):
        url = form.get(f"MediaUrl{index}")
        if not url:
            continue
        mime = (form.get(f"MediaContentType{index}") or "").split(";")[0].strip().lower()
        if not _MIME.match(mime):
            mime = "application/octet-stream"
        name = f"media{index}{mimetypes.guess_extension(mime) or ''}"
        attachments.append(Attachment(mime=mime, size=0, name=name, url=url))
    return tuple(attachments)


def normalize(
    form: Mapping[str, str], *, message_id: str, callback_url: str | None, shared_session: bool = True
) -> Envelope:
    """A Twilio SMS/MMS webhook's form as an Envelope (pure: no I/O)."""
    message_sid, sender, to = require(form, "MessageSid", "From", "To")
    attachments = media_attachments(form)
    metadata: dict[str, object] = {"provider": "twilio", "kind": "mms" if attachments else "sms", "to": to}
    if form.get("FromCountry"):
        metadata["from_country"] = form["FromCountry"]
    return Envelope(
        message_id=message_id,
        channel=CHANNEL,
        channel_message_id=message_sid,
        sender=sender,
        session_id=caller_session(sender, channel=CHANNEL, shared=shared_session, fallback=sender),
        text=(form.get("Body") or "").strip(),
        attachments=attachments,
        metadata=metadata,
        reply=ReplyRoute(callback_url=callback_url, context={"to": sender, "from": to}),
    )


def split_message(text: str, limit: int, *, numbered: bool = True) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, numbered ``(1/3) `` if asked; deterministic."""
    text = text.strip()
    if len(text) <= limit:
        return [text]
    digits = 1
    while True:
        width = 2 * digits + 4 if numbered else 0  # "(12/12) "
        if limit - width < 20:
            return split_text(text, limit)  # too short to afford numbering
        parts = split_text(text, limit - width)
        if not numbered:
            return parts
        if len(str(len(parts))) <= digits:
            return [f"({i}/{len(parts)}) {part}" for i, part in enumerate(parts, 1)]
        digits = len(str(len(parts)))


def rest_client(settings: Settings) -> Client:
    """The real Twilio client, at ``TWILIO_API_BASE_URL`` (a fake in tests, or a proxy)."""
    http = TwilioHttpClient(timeout=settings.twilio_api_timeout)
    client = Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=http)
    client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client


def describe(exc: TwilioRestException) -> str:
    """A Twilio API error as a plain reason (its ``str`` is coloured for terminals)."""
    code = f" error {exc.code}" if exc.code else ""
    return f"Twilio HTTP {exc.status}{code}: {exc.msg}"


class TwilioSMS(Channel):
    name = CHANNEL

    def __init__(self, ctx: EdgeContext) -> None:
        super().__init__(ctx)
        self._client: Client | None = None
        logging.getLogger("twilio.http_client").setLevel(logging.WARNING)  # it logs every request at INFO

    # --- Redis state ---------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return ":".join((self.ctx.keys.prefix, "twilio", *parts))

    def _opted_out(self, number: str) -> bool:
        return bool(self.ctx.redis.exists(self._key("optout", number)))

    def _first_time(self, message_sid: str) -> bool:
        """Claim a webhook answered without queueing (keywords, media-only notices) so a retry stays silent."""
        key = self.ctx.keys.idempotency(f"{CHANNEL}-direct", message_sid)
        return bool(self.ctx.redis.set(key, "1", nx=True, ex=self.ctx.settings.idempotency_ttl_seconds))

    # --- webhook -------------------------------------------------------------
    def blueprint(self) -> Blueprint:
        blueprint = Blueprint("twilio_sms", __name__)
        blueprint.add_url_rule(f"{ROUTE_PREFIX}/sms", "sms", self.webhook, methods=["POST"])
        return blueprint

    def webhook(self) -> ResponseReturnValue:
        settings = self.ctx.settings
        verify_twilio_request(settings, request)
        form = request.form
        message_sid, sender = require(form, "MessageSid", "From")
        answer = MessagingResponse()
        opted_out = self._opted_out(sender)
        word = keyword(form.get("Body") or "", form.get("OptOutType"), opted_out=opted_out)
        if word == "stop":
            self.ctx.redis.set(self._key("optout", sender), "1")
            log.info("twilio-sms: %s opted out (%s)", sender, message_sid)
            return twiml(answer)
        if word == "start":
            self.ctx.redis.delete(self._key("optout", sender))
            return twiml(answer)
        if word == "help":
            if settings.twilio_sms_help and self._first_time(message_sid):
                answer.message(settings.twilio_sms_help)
            return twiml(answer)
        if opted_out:
            log.info("twilio-sms: %s is opted out; not answering %s", sender, message_sid)
            return twiml(answer)

        envelope = normalize(form, message_id=new_message_id(), callback_url=self.callback_url,
                             shared_session=settings.twilio_shared_session)
        if not (envelope.text or envelope.attachments):
            return twiml(answer)  # nothing to answer
        fresh = not self.accept(envelope, message_sid).duplicate  # media are converted to text first
        if fresh and settings.twilio_sms_ack:
            answer.message(settings.twilio_sms_ack)
        return twiml(answer)

    # --- reply -----------------------------------------------------------------
    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = rest_client(self.ctx.settings)
        return self._client

    def send(self, reply: CallbackReply) -> None:
        """Text the reply (a "failed" notice too), part by part, each part at most once."""
        settings = self.ctx.settings
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            raise PermanentSendError("Twilio channel not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)")
        to, sender = reply.context.get("to"), settings.twilio_from_number or reply.context.get("from")
        if not to or not sender:
            raise PermanentSendError("the reply names no 'to' or 'from' number")
        if self._opted_out(str(to)):
            log.info("twilio-sms: %s opted out; reply %s not sent", to, reply.message_id)
            return
        parts = split_message(reply.text.strip() or EMPTY_REPLY, settings.twilio_max_sms_chars,
                              numbered=settings.twilio_number_parts)
        for index, body in enumerate(parts):
            sent_key = self._key("sent", reply.message_id, str(index))
            if self.ctx.redis.exists(sent_key):
                continue  # sent by an earlier attempt that failed on a later part
            sid = self._create(str(to), str(sender), body)
            self.ctx.redis.set(sent_key, sid, ex=settings.idempotency_ttl_seconds)

    def _create(self, to: str, sender: str, body: str) -> str:
        try:
            message = self.client.messages.create(to=to, from_=sender, body=body)
        except TwilioRestException as exc:
            if exc.status == 429 or exc.status >= 500:
                raise TemporarySendError(describe(exc)) from exc
            raise PermanentSendError(describe(exc)) from exc
        except (requests.RequestException, TwilioException) as exc:
            raise TemporarySendError(f"Twilio API unreachable: {type(exc).__name__}: {exc}") from exc
        return str(message.sid)
