"""Twilio voice: a spoken conversation held entirely in TwiML, the answers read from Redis.

    POST …/voice                   greeting + <Gather input="speech" action=…/gather?turn=1>
    POST …/voice/gather?turn=N     the SpeechResult is queued as a message (dedupe on CallSid:N);
                                   "One moment" + <Redirect> to …/wait
    POST …/voice/wait?message_id=… long-polls the message (at most TWILIO_VOICE_HOLD_SECONDS,
                                   far below Twilio's 15 s webhook timeout): the answer in a
                                   <Gather> for turn N+1, or another <Redirect> while it thinks

No REST call is needed: Twilio keeps fetching TwiML while the caller is on the
line, and stops when they hang up, so an answer that comes later is simply
never read (not an error).  Voice messages carry no callback URL, so the core
delivers nothing for them; ``send`` exists for the channel interface only.
Silence or a goodbye ends the call with ``<Say>`` and ``<Hangup/>``.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlencode

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from twilio.twiml.voice_response import VoiceResponse

from edge.channels.base import CallbackReply, Channel
from edge.channels.twilio.common import ROUTE_PREFIX, require, twiml, verify_twilio_request
from edge.channels.twilio.normalize import VOICE_CHANNEL, is_goodbye, normalize_voice, spoken
from edge.errors import BadRequest
from redis_stores.messages import MessageRecord
from tasks.schemas import new_message_id
from tasks.settings import Settings

__all__ = [
    "CHANNEL",
    "MAX_HOLD_SECONDS",
    "TwilioVoice",
    "hold_twiml",
]

log = logging.getLogger(__name__)

CHANNEL = VOICE_CHANNEL
MAX_HOLD_SECONDS = 10.0  # one webhook's long poll; Twilio hangs up on a webhook after 15 s
STILL_WAITING_EVERY = 3  # hold loops between "still thinking" notes
FAILED_TEXT = "Sorry, I could not answer that. Please try again or ask something else."
TOO_SLOW_TEXT = "Sorry, that is taking too long. Please ask again later, or ask something else."
LOST_TEXT = "Sorry, I lost track of that question."
EMPTY_TEXT = "Sorry, I have no answer to that."


def _say(node: VoiceResponse, text: str, settings: Settings) -> None:
    options = {"language": settings.twilio_voice_language}
    if settings.twilio_voice_voice:
        options["voice"] = settings.twilio_voice_voice
    node.say(text, **options)


def gather_twiml(settings: Settings, say: str, action: str) -> VoiceResponse:
    """Say something (interruptible), listen for the next turn; silence falls through to goodbye."""
    response = VoiceResponse()
    gather = response.gather(
        input="speech", action=action, method="POST", speech_timeout="auto", language=settings.twilio_voice_language
    )
    if say:
        _say(gather, say, settings)
    _say(response, settings.twilio_voice_goodbye, settings)
    response.hangup()
    return response


def goodbye_twiml(settings: Settings, before: str = "") -> VoiceResponse:
    response = VoiceResponse()
    if before:
        _say(response, before, settings)
    _say(response, settings.twilio_voice_goodbye, settings)
    response.hangup()
    return response


def hold_twiml(settings: Settings, say: str, wait_url: str) -> VoiceResponse:
    """Keep the caller on the line: an optional short note, then fetch the wait URL again."""
    response = VoiceResponse()
    if say:
        _say(response, say, settings)
    response.redirect(wait_url, method="POST")
    return response


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name, str(default))
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a number", fields={name: [f"not a number: {raw!r}"]}) from exc
    if not 0 <= value <= 100_000:
        raise BadRequest(f"{name} out of range", fields={name: ["out of range"]})
    return value


class TwilioVoice(Channel):
    name = CHANNEL

    def _url(self, route: str, **query: str | int) -> str:
        base = self.ctx.settings.public_base_url.rstrip("/")
        return f"{base}{ROUTE_PREFIX}/voice{route}" + (f"?{urlencode(query)}" if query else "")

    def blueprint(self) -> Blueprint:
        blueprint = Blueprint("twilio_voice", __name__)
        blueprint.add_url_rule(f"{ROUTE_PREFIX}/voice", "incoming", self.incoming, methods=["POST"])
        blueprint.add_url_rule(f"{ROUTE_PREFIX}/voice/gather", "gather", self.gather, methods=["POST"])
        blueprint.add_url_rule(f"{ROUTE_PREFIX}/voice/wait", "wait", self.wait, methods=["POST"])
        return blueprint

    def incoming(self) -> ResponseReturnValue:
        settings = self.ctx.settings
        verify_twilio_request(settings, request)
        require(request.form, "CallSid")
        return twiml(gather_twiml(settings, settings.twilio_voice_greeting, self._url("/gather", turn=1)))

    def gather(self) -> ResponseReturnValue:
        settings = self.ctx.settings
        verify_twilio_request(settings, request)
        turn = _int_arg("turn", 1)
        envelope = normalize_voice(request.form, message_id=new_message_id(), turn=turn,
                             shared_session=settings.twilio_shared_session)
        if not envelope.text or is_goodbye(envelope.text, settings.twilio_voice_goodbye_words):
            return twiml(goodbye_twiml(settings))
        accepted = self.accept(envelope, envelope.channel_message_id)
        wait_url = self._url("/wait", message_id=accepted.message_id, turn=turn, n=0)
        return twiml(hold_twiml(settings, settings.twilio_voice_hold, wait_url))

    def wait(self) -> ResponseReturnValue:
        settings = self.ctx.settings
        verify_twilio_request(settings, request)
        (call_sid,) = require(request.form, "CallSid")
        turn, loops = _int_arg("turn", 1), _int_arg("n", 0)
        message_id = request.args.get("message_id", "")[:64]
        next_turn = self._url("/gather", turn=turn + 1)
        record = self.ctx.messages.get(message_id) if message_id else None
        if record is None or record.envelope.get("metadata", {}).get("call_sid") != call_sid:
            return twiml(goodbye_twiml(settings, LOST_TEXT))
        hold = min(settings.twilio_voice_hold_seconds, MAX_HOLD_SECONDS)
        left = settings.twilio_voice_max_wait_seconds - (time.time() - record.created_at)
        record = self.ctx.messages.wait(message_id, max(0.0, min(hold, left)))
        if record is None:
            return twiml(goodbye_twiml(settings, LOST_TEXT))
        if (answer := self._answer(record)) is not None:
            return twiml(gather_twiml(settings, answer, next_turn))
        if time.time() - record.created_at >= settings.twilio_voice_max_wait_seconds:
            log.info("twilio-voice: %s gave up waiting for %s", call_sid, message_id)
            return twiml(gather_twiml(settings, TOO_SLOW_TEXT, next_turn))
        note = settings.twilio_voice_still_waiting if loops % STILL_WAITING_EVERY == STILL_WAITING_EVERY - 1 else ""
        wait_url = self._url("/wait", message_id=message_id, turn=turn, n=loops + 1)
        return twiml(hold_twiml(settings, note, wait_url))

    def _answer(self, record: MessageRecord) -> str | None:
        """What to read out once the message is finished; None while it is not."""
        if record.status == "answered" and record.reply is not None:
            text = spoken(str(record.reply.get("text") or ""), self.ctx.settings.twilio_voice_max_say_chars)
            return text or EMPTY_TEXT
        if record.status == "failed":
            return FAILED_TEXT
        return None

    def send(self, reply: CallbackReply) -> None:
        """Nothing to send: the wait loop reads the answer from the message (voice has no callback URL)."""
        log.info("twilio-voice: reply %s is read out by the call's wait loop", reply.message_id)
