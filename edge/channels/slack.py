"""Slack: ``POST /v1/channels/slack/events`` (Events API) in, ``chat.postMessage`` out.

Every request is verified first with ``slack_sdk``'s ``SignatureVerifier``
(``X-Slack-Signature`` over ``v0:<timestamp>:<body>``, timestamps older than
five minutes refused); no signing secret configured → 403.  The view only
admits the event and answers, well inside Slack's 3 seconds.

Slack retries an unacknowledged event (``X-Slack-Retry-Num``) with the same
``event_id``, which is the delivery id given to ``accept``: the dedupe key is
written in the same atomic step as the message, so a first delivery that failed
before it was admitted (Redis down → 503) left no key and its retry is queued.

Direct messages and ``app_mention`` events are answered; everything else (bot
messages, edits, channel chatter) is acknowledged and dropped.  Sessions: a
thread is a conversation, ``slack:<team>:<channel>:<thread_ts>`` (a mention's
own ``ts`` starts its thread, and the reply goes there).  A top-level direct
message belongs to ``slack:<team>:<channel>`` and is answered top-level: a DM
is one running conversation, and threading every DM line would split it into
one-message sessions.

Replies go through ``slack_sdk``'s ``WebClient`` at ``SLACK_API_BASE_URL``; the
text has ``& < >`` escaped (so a model cannot ping ``<!channel>`` or forge a
link) and is split below Slack's recommended 4,000 characters, each part
recorded once sent.  With ``SLACK_STREAM_INTERVAL`` > 0 the reply is shown while
it is written: the first partial is a ``chat.postMessage``, later ones
``chat.update`` it, and the final reply updates it into its first part
(``edge/channels/partials.py``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import Clock, SignatureVerifier

from edge.channels.base import CallbackReply, Channel, PermanentSendError, TemporarySendError
from edge.channels.partials import PartialBackoff, PartialUpdate, ShownReplies, partial_text
from edge.channels.splitting import split_text
from edge.context import EdgeContext
from edge.errors import BadRequest, Forbidden
from tasks.schemas import Envelope, ReplyRoute, new_message_id

__all__ = ["CHANNEL", "MAX_MESSAGE_CHARS", "Slack", "escape", "normalize"]

log = logging.getLogger(__name__)

CHANNEL = "slack"
ROUTE = "/v1/channels/slack/events"
MAX_MESSAGE_CHARS = 3900
EMPTY_REPLY = "Sorry, I have no answer to that."
TEMPORARY_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})
_T = TypeVar("_T")
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


def escape(text: str) -> str:
    """Slack's three control characters, so model output is shown, never interpreted as a ping or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _bot_user(payload: Mapping[str, Any]) -> str | None:
    for auth in payload.get("authorizations") or ():
        if isinstance(auth, Mapping) and auth.get("is_bot") and auth.get("user_id"):
            return str(auth["user_id"])
    return None


def normalize(
    payload: Mapping[str, Any], *, message_id: str, callback_url: str | None, stream_interval: float = 0.0
) -> Envelope | None:
    """An ``event_callback`` as an Envelope, or None when it is not for the bot (pure: no I/O)."""
    event = payload.get("event")
    if payload.get("type") != "event_callback" or not isinstance(event, Mapping):
        return None
    kind = event.get("type")
    if event.get("bot_id") or event.get("subtype") not in (None, "file_share"):
        return None  # our own replies, other bots, edits, joins …
    if kind == "message" and event.get("channel_type") == "im":
        direct = True
    elif kind == "app_mention":
        direct = False
    else:
        return None
    team = str(payload.get("team_id") or event.get("team") or "")
    channel, user, ts = event.get("channel"), event.get("user"), event.get("ts")
    if not (team and channel and user and ts):
        return None
    bot = _bot_user(payload)
    text = str(event.get("text") or "")
    if bot:
        text = re.sub(rf"<@{bot}(?:\|[^>]*)?>", "", text)
    elif not direct:
        text = _MENTION.sub("", text, count=1)
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    if not text:
        return None
    thread = event.get("thread_ts") or (None if direct else ts)
    session = f"{CHANNEL}:{team}:{channel}" + (f":{thread}" if thread else "")
    context: dict[str, Any] = {"channel": channel, **({"thread_ts": thread} if thread else {})}
    return Envelope(
        message_id=message_id,
        channel=CHANNEL,
        channel_message_id=str(payload.get("event_id") or ts),
        sender=str(user),
        session_id=session,
        text=text,
        metadata={"provider": "slack", "team": team, "event_type": kind, "event_id": payload.get("event_id"),
                  "ts": ts, "direct": direct},
        reply=ReplyRoute(callback_url=callback_url, context=context, stream_interval=stream_interval),
    )


def _temporary(exc: SlackApiError) -> bool:
    status = getattr(exc.response, "status_code", 0) or 0
    error = ""
    data = getattr(exc.response, "data", None)
    if isinstance(data, Mapping):
        error = str(data.get("error", ""))
    return status == 429 or status >= 500 or error in TEMPORARY_ERRORS


class Slack(Channel):
    name = CHANNEL

    def __init__(self, ctx: EdgeContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx)
        self.clock = clock
        self._client: WebClient | None = None
        self.shown = ShownReplies(ctx.redis, ctx.keys, CHANNEL, ttl=ctx.settings.idempotency_ttl_seconds,
                                  lock_seconds=ctx.settings.slack_api_timeout + 2)

    def blueprint(self) -> Blueprint:
        blueprint = Blueprint("slack", __name__)
        blueprint.add_url_rule(ROUTE, "events", self.events, methods=["POST"])
        return blueprint

    def verify(self, body: bytes) -> None:
        """403 unless the signature matches and the timestamp is within five minutes."""
        secret = self.ctx.settings.slack_signing_secret
        if not secret:
            raise Forbidden("Slack channel not configured (SLACK_SIGNING_SECRET)")
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        if not timestamp.isdigit():  # slack_sdk would raise ValueError on it
            raise Forbidden("missing or malformed X-Slack-Request-Timestamp")
        verifier = SignatureVerifier(secret, clock=_Clock(self.clock))
        try:
            body.decode("utf-8")  # slack_sdk decodes it and would raise (a 500): Slack only sends UTF-8
        except UnicodeDecodeError as exc:
            raise Forbidden("X-Slack-Signature does not verify (the body is not UTF-8)") from exc
        if not verifier.is_valid(body, timestamp, request.headers.get("X-Slack-Signature", "")):
            raise Forbidden("X-Slack-Signature does not verify (or the timestamp is over 5 minutes off)")

    def events(self) -> ResponseReturnValue:
        body = request.get_data(cache=True)
        self.verify(body)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise BadRequest("not an Events API payload (a JSON object)")
        if payload.get("type") == "url_verification":
            return jsonify({"challenge": str(payload.get("challenge", ""))}), 200
        envelope = normalize(payload, message_id=new_message_id(), callback_url=self.callback_url,
                             stream_interval=self.ctx.settings.slack_stream_interval)
        if envelope is None:
            return "", 200
        accepted = self.accept(envelope, envelope.channel_message_id)
        if accepted.duplicate:
            log.info("slack: event %s (retry %s) already queued as %s", payload.get("event_id"),
                     request.headers.get("X-Slack-Retry-Num", "-"), accepted.message_id)
        return "", 200

    @property
    def client(self) -> WebClient:
        if self._client is None:
            settings = self.ctx.settings
            base = settings.slack_api_base_url if settings.slack_api_base_url.endswith("/") else (
                settings.slack_api_base_url + "/")
            self._client = WebClient(token=settings.slack_bot_token, base_url=base, timeout=settings.slack_api_timeout)
        return self._client

    def send(self, reply: CallbackReply) -> None:
        """chat.postMessage in the thread, part by part, each part at most once."""
        settings = self.ctx.settings
        if not settings.slack_bot_token:
            raise PermanentSendError("Slack channel not configured (SLACK_BOT_TOKEN)")
        channel = reply.context.get("channel")
        if not channel:
            raise PermanentSendError("the reply names no Slack channel")
        thread_ts = reply.context.get("thread_ts")
        parts = split_text(reply.text or EMPTY_REPLY, MAX_MESSAGE_CHARS) or [EMPTY_REPLY]
        shown = self.take_over_partial(self.shown, reply.message_id, enabled=settings.slack_stream_interval > 0,
                                       wait_seconds=settings.slack_api_timeout + 1)

        def post(text: str, index: int) -> str:
            response = _sending(lambda: self.client.chat_postMessage(channel=str(channel), text=escape(text),
                                                                     thread_ts=thread_ts))
            return str(response.get("ts", ""))

        self.send_parts(reply.message_id, parts, post, shown=shown,
                        edit=lambda ts, text: _sending(lambda: self._update_final(str(channel), ts, text)))

    # --- a reply shown while it is written --------------------------------------------
    def send_partial(self, update: PartialUpdate) -> str:
        """First partial: chat.postMessage; later ones: chat.update of it (partials.py orders them)."""
        channel = update.context.get("channel")
        if self.ctx.settings.slack_stream_interval <= 0 or not channel or not self.ctx.settings.slack_bot_token:
            return "ignored: streaming is off or the update names no channel"
        text = escape(partial_text(update.text, MAX_MESSAGE_CHARS))

        def post() -> str:
            response = _partial_call(lambda: self.client.chat_postMessage(
                channel=str(channel), text=text, thread_ts=update.context.get("thread_ts")))
            return str(response["ts"])

        def edit(ts: str) -> None:
            _partial_call(lambda: self.client.chat_update(channel=str(channel), ts=ts, text=text))

        return self.shown.show(update, post, edit)

    def _update_final(self, channel: str, ts: str, text: str) -> bool:
        """Turn the partial message into the reply's first part; False: it is gone, post a new one."""
        try:
            self.client.chat_update(channel=channel, ts=ts, text=escape(text))
        except SlackApiError as exc:
            if _temporary(exc):
                raise
            log.info("slack: could not update the partial message %s (%s); posting the reply anew", ts,
                     exc.response.get("error"))
            return False
        return True


def _sending(call: Callable[[], _T]) -> _T:
    """A Web API call for a reply's part: Slack's errors as TemporarySendError or PermanentSendError."""
    try:
        return call()
    except SlackApiError as exc:
        reason = f"Slack {getattr(exc.response, 'status_code', '?')}: {exc.response.get('error')}"
        if _temporary(exc):
            raise TemporarySendError(reason) from None
        raise PermanentSendError(reason) from None
    except (SlackClientError, OSError) as exc:
        raise TemporarySendError(f"Slack API unreachable: {type(exc).__name__}: {exc}") from None


def _partial_call(call: Callable[[], Any]) -> Any:
    """A Web API call for a partial: a 429 pauses the message's partials for its ``Retry-After``."""
    try:
        return call()
    except SlackApiError as exc:
        if getattr(exc.response, "status_code", 0) == 429:
            headers = getattr(exc.response, "headers", None) or {}
            raise PartialBackoff(float(headers.get("Retry-After", headers.get("retry-after", 1)) or 1)) from None
        raise


class _Clock(Clock):
    """slack_sdk's clock around a plain function (tests move time)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()
