"""Accepting a message: admit it durably, then send its task; 503 unless both happened.

Every channel ends here, so the promise "no 2xx without a durable enqueue"
is kept in one place.
"""

from __future__ import annotations

import logging

import redis
from kombu.exceptions import OperationalError

from edge.context import EdgeContext
from edge.errors import Unavailable
from edge.observability import note_accepted
from tasks.names import CONVERT_ATTACHMENTS, HANDLE_MESSAGE
from tasks.schemas import Attachment, Envelope

__all__ = ["Accepted", "accept", "to_convert"]

log = logging.getLogger(__name__)

PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


class Accepted:
    def __init__(self, message_id: str, session_id: str, duplicate: bool) -> None:
        self.message_id, self.session_id, self.duplicate = message_id, session_id, duplicate


def to_convert(ctx: EdgeContext, envelope: Envelope) -> list[Attachment]:
    """Attachments the convert step must turn into text: those no live helper accepts (a helper that
    declares ``accepts`` for a type is preferred, and the core routes the attachment to it)."""
    if not envelope.attachments:
        return []
    capabilities = [c for helper in ctx.helpers.all() for c in helper.capabilities]
    return [a for a in envelope.attachments if not any(c.accepts_mime(a.mime) for c in capabilities)]


def accept(ctx: EdgeContext, envelope: Envelope, idempotency_key: str | None = None) -> Accepted:
    """Queue ``envelope``; a repeated idempotency key returns the first message instead.

    A message with attachments no helper accepts is admitted at stage "converting" and goes to queue
    ``convert`` first (unsupported types become a polite line there); the core waits for it.
    """
    converting = bool(to_convert(ctx, envelope))
    if converting:
        created, message_id = ctx.messages.admit(envelope, idempotency_key, {"stage": "converting"})
    else:
        created, message_id = ctx.messages.admit(envelope, idempotency_key)
    if not created:
        record = ctx.messages.get(message_id)
        return Accepted(message_id, record.session_id if record else envelope.session_id, duplicate=True)
    try:
        ctx.celery.send_task(
            CONVERT_ATTACHMENTS if converting else HANDLE_MESSAGE,
            args=[envelope.message_id, envelope.session_id],
            retry=True,
            retry_policy=PUBLISH_RETRY,
        )
    except (OperationalError, redis.RedisError, OSError) as exc:
        log.warning("could not enqueue %s: %s", envelope.message_id, exc)
        try:
            ctx.messages.rollback(envelope, idempotency_key)
        except redis.RedisError:
            log.warning("rollback of %s failed; the core drops it as unknown if it resurfaces", envelope.message_id)
        raise Unavailable("the message queue is unavailable; try again shortly") from exc
    note_accepted(envelope, converting=converting)
    return Accepted(message_id, envelope.session_id, duplicate=False)
