"""Accepting a message: admit it and queue its task in one atomic Redis step; 503 unless it happened.

Every channel ends here, so the promise "no 2xx without a durable enqueue"
is kept in one place.
"""

from __future__ import annotations

import dataclasses
import logging

import redis

from edge.context import EdgeContext
from edge.errors import TooManyRequests, Unavailable, Unprocessable
from edge.observability import note_accepted, note_refused
from edge.redis_fill import StorageFull, out_of_memory
from redis_stores.messages import QuotaExceeded
from tasks.enqueue import task_message
from tasks.names import CONVERT_ATTACHMENTS, HANDLE_MESSAGE
from tasks.schemas import MAX_ATTACHMENT_NAME, Attachment, Envelope, envelope_errors

__all__ = ["Accepted", "accept", "check_envelope", "to_convert"]

log = logging.getLogger(__name__)

class Accepted:
    def __init__(self, message_id: str, session_id: str, duplicate: bool) -> None:
        self.message_id, self.session_id, self.duplicate = message_id, session_id, duplicate


def check_envelope(envelope: Envelope) -> None:
    """422 naming the fields unless the workers' own schema loads ``envelope``: whatever a channel's normaliser
    built (namespaced session ids, derived attachment names, URLs), a 2xx is only given for a message that can
    be answered."""
    errors = envelope_errors(envelope)
    if errors:
        log.info("refused envelope from channel %s: %s", envelope.channel, errors)
        raise Unprocessable("the message cannot be accepted: " + _describe(errors), fields={"envelope": errors})


def _names_cut(envelope: Envelope) -> Envelope:
    """Attachment names (a provider's file name, a URL's last segment) cut to what the schema takes: a long
    name is no reason to refuse a person's file."""
    if all(len(a.name) <= MAX_ATTACHMENT_NAME for a in envelope.attachments):
        return envelope
    return dataclasses.replace(envelope, attachments=tuple(
        dataclasses.replace(a, name=a.name[:MAX_ATTACHMENT_NAME]) for a in envelope.attachments))


def _describe(errors: dict[str, object], prefix: str = "") -> str:
    """``session_id: Length must be between 1 and 256.; attachments.0.name: ...`` for the error line."""
    parts: list[str] = []
    for name, value in errors.items():
        if isinstance(value, dict):
            parts.append(_describe(value, f"{prefix}{name}."))
        else:
            parts.append(f"{prefix}{name}: {' '.join(map(str, value)) if isinstance(value, list) else value}")
    return "; ".join(parts)


def to_convert(ctx: EdgeContext, envelope: Envelope) -> list[Attachment]:
    """Attachments the convert step must turn into text: those no live helper accepts (a helper that
    declares ``accepts`` for a type is preferred, and the core routes the attachment to it)."""
    if not envelope.attachments:
        return []
    capabilities = [c for helper in ctx.helpers.all() for c in helper.capabilities]
    return [a for a in envelope.attachments if not any(c.accepts_mime(a.mime) for c in capabilities)]


def accept(ctx: EdgeContext, envelope: Envelope, idempotency_key: str | None = None, *,
           owner: str | None = None) -> Accepted:
    """Queue ``envelope``; a repeated idempotency key returns the first message instead.

    ``owner`` is the client door's caller (edge/clients.py): only it may read the record.

    A message with attachments no helper accepts is admitted at stage "converting" and goes to queue
    ``convert`` first (unsupported types become a polite line there); the core waits for it.
    """
    envelope = _names_cut(envelope)
    check_envelope(envelope)
    if ctx.fill is not None:
        ctx.fill.check()  # 503 while Redis is nearly full: the rest of its memory is for messages in flight
    converting = bool(to_convert(ctx, envelope))
    task = task_message(ctx.celery, CONVERT_ATTACHMENTS if converting else HANDLE_MESSAGE,
                        [envelope.message_id, envelope.session_id])
    extra = {**({"stage": "converting"} if converting else {}), **({"owner": owner} if owner else {})}
    try:
        created, message_id = ctx.messages.admit(envelope, idempotency_key, extra, task=task, owner=owner,
                                                 open_quota=ctx.settings.quota_open_messages)
    except QuotaExceeded as exc:
        note_refused("quota_open_messages")
        raise TooManyRequests(f"{exc.open_messages} of your messages are still open (QUOTA_OPEN_MESSAGES="
                              f"{ctx.settings.quota_open_messages}); wait for their answers", 5) from exc
    except (redis.RedisError, OSError) as exc:
        if out_of_memory(exc):  # noeviction: Redis refused the write, and the script wrote nothing
            log.warning("could not admit %s: Redis is full: %s", envelope.message_id, exc)
            raise StorageFull("storage is full (Redis maxmemory): nothing was accepted, try again shortly") from exc
        # One script wrote the record, the inbox entry and the task, or nothing: nothing to undo.
        log.warning("could not admit %s: %s", envelope.message_id, exc)
        raise Unavailable("the message queue is unavailable; try again shortly") from exc
    if not created:
        record = ctx.messages.get(message_id)
        return Accepted(message_id, record.session_id if record else envelope.session_id, duplicate=True)
    note_accepted(envelope, converting=converting)
    return Accepted(message_id, envelope.session_id, duplicate=False)
