"""Twilio SMS/MMS: ``POST /v1/channels/twilio/sms`` in, the Twilio REST API out.

The webhook verifies ``X-Twilio-Signature``, answers at once with TwiML (empty,
or a configured acknowledgement) and queues the text (``normalize_sms``);
Twilio's retries of the same ``MessageSid`` are dropped by ``accept``.  The
core's reply comes back through the channel callback and ``send`` texts it with
the REST client (client.py), split at paragraph, sentence or word boundaries
when it is too long; each part is recorded in Redis once sent, so a retry after
a failed part never repeats an earlier one (``Channel.send_parts``).

Opt-out keywords (STOP, …) are never answered by the model: the number is
marked opted out (later replies to it are dropped) until START.  HELP gets
``TWILIO_SMS_HELP`` if set.  MMS media become attachments; while no helper
understands them the person is told so at once.
"""

from __future__ import annotations

import logging

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from edge.channels.base import CallbackReply, Channel, PermanentSendError
from edge.channels.twilio.client import rest_client, send_sms
from edge.channels.twilio.common import ROUTE_PREFIX, require, twiml, verify_twilio_request
from edge.channels.twilio.normalize import SMS_CHANNEL, keyword, normalize_sms, split_message
from edge.context import EdgeContext
from tasks.schemas import new_message_id

__all__ = ["CHANNEL", "EMPTY_REPLY", "TwilioSMS"]

log = logging.getLogger(__name__)

CHANNEL = SMS_CHANNEL
EMPTY_REPLY = "Sorry, I have no answer to that."


class TwilioSMS(Channel):
    name = CHANNEL
    provider = "twilio"  # its Redis keys: <prefix>:twilio:…

    def __init__(self, ctx: EdgeContext) -> None:
        super().__init__(ctx)
        self._client: Client | None = None
        logging.getLogger("twilio.http_client").setLevel(logging.WARNING)  # it logs every request at INFO

    # --- Redis state ---------------------------------------------------------
    def _opted_out(self, number: str) -> bool:
        return bool(self.ctx.redis.exists(self.ctx.keys.twilio_opt_out(number)))

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
            self.ctx.redis.set(self.ctx.keys.twilio_opt_out(sender), "1")
            log.info("twilio-sms: %s opted out (%s)", sender, message_sid)
            return twiml(answer)
        if word == "start":
            self.ctx.redis.delete(self.ctx.keys.twilio_opt_out(sender))
            return twiml(answer)
        if word == "help":
            if settings.twilio_sms_help and self._first_time(message_sid):
                answer.message(settings.twilio_sms_help)
            return twiml(answer)
        if opted_out:
            log.info("twilio-sms: %s is opted out; not answering %s", sender, message_sid)
            return twiml(answer)

        envelope = normalize_sms(form, message_id=new_message_id(), callback_url=self.callback_url,
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
        self.send_parts(reply.message_id, parts, lambda body, _: send_sms(self.client, str(to), str(sender), body))
