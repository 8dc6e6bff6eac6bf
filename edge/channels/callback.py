"""``POST /v1/channels/<name>/callback``: the core's signed reply, sent on by the channel, once.

Answers: 204 sent (or already sent); 401 bad signature; 404 unknown channel;
503 while another request is sending the same reply (``edge/channels/send_claim.py``);
503 a temporary provider failure (the core retries with backoff); 422 a
permanent one (the core dead-letters it with our reason).

A ``"type": "message.partial"`` body (a reply still being written) goes to the
channel's ``send_partial`` instead: best effort, always ``200 {"outcome": …}``
once the signature verifies, and outside the once-per-``webhook-id`` record
(partials are ordered by their ``seq``, see ``edge/channels/partials.py``).
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from standardwebhooks.webhooks import WebhookVerificationError

from edge.channels.base import CallbackReply, Channel, PermanentSendError, TemporarySendError
from edge.channels.partials import PartialUpdate
from edge.channels.send_claim import SendClaim
from edge.context import edge
from edge.errors import BadRequest, NotFound, Unauthorized, Unavailable, Unprocessable
from tasks.signing import verify

__all__ = ["callback_blueprint"]

log = logging.getLogger(__name__)


def callback_blueprint(channels: dict[str, Channel]) -> Blueprint:
    blueprint = Blueprint("channel_callbacks", __name__)

    @blueprint.post("/v1/channels/<name>/callback")
    def callback(name: str) -> ResponseReturnValue:
        ctx = edge()
        channel = channels.get(name)
        if channel is None:
            raise NotFound(f"no channel {name!r}")
        raw = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            verify(ctx.settings.switchboard_secret, raw, headers)
        except WebhookVerificationError as exc:
            raise Unauthorized("callback signature does not verify") from exc
        try:
            body = json.loads(raw)
            parsed = (PartialUpdate.from_json(body) if body.get("type") == "message.partial"
                      else CallbackReply.from_json(body))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadRequest(f"not a reply: {exc}") from exc
        if isinstance(parsed, PartialUpdate):
            return jsonify({"outcome": channel.send_partial(parsed)}), 200
        reply = parsed
        sent_key = ctx.keys.callback_sent(name, headers["webhook-id"])
        claim_key = ctx.keys.callback_claim(name, headers["webhook-id"])
        if ctx.redis.exists(sent_key):
            return "", 204
        with SendClaim(ctx.redis, claim_key, ctx.settings.callback_claim_seconds) as held:
            if not held:
                raise Unavailable("this reply is being sent right now")
            if ctx.redis.exists(sent_key):  # sent by the holder we waited behind, just before we claimed
                return "", 204
            try:
                channel.send(reply)
            except TemporarySendError as exc:
                log.warning("%s: temporary failure sending %s: %s", name, reply.message_id, exc)
                raise Unavailable(f"provider temporarily failed: {exc}") from exc
            except PermanentSendError as exc:
                log.warning("%s: permanent failure sending %s: %s", name, reply.message_id, exc)
                raise Unprocessable(f"provider refused the reply: {exc}") from exc
            ctx.redis.set(sent_key, "1", ex=ctx.settings.idempotency_ttl_seconds)  # before the claim goes
        return "", 204

    return blueprint
