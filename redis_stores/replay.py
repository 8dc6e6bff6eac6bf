"""Replaying a dead letter without ever answering twice.

Two kinds of dead letter, two meanings of "replay":

- **poison** (the message crashed or timed out its workers ``MAX_ATTEMPTS``
  times; the person got a failure notice): replay answers it again, as a
  *new* message (new id, same session and reply route, ``metadata.replay_of``)
  queued at the end of its session.  A new id because the failure notice
  already went out under the old one (receivers drop a repeated
  ``webhook-id``).  The admission uses the idempotency key
  ``replay:<message id>``, so replaying again returns the same new message
  instead of answering a second time.
- **delivery** (the answer exists but its callback refused it or stayed
  unreachable until ``DELIVERY_MAX_AGE``): replay delivers *the same reply*
  again, same ``webhook-id``, so a receiver that did get it the first time
  drops the repeat.  One Lua step flips the record's ``delivery`` from
  ``dead`` to ``replaying`` and appends the id to its session's outbox (at the
  end: a reply being posted now keeps its place), so two replays at once
  send one delivery; it can be replayed again only if it dead-letters again.

A failed message's undeliverable notice is replayed as poison: the person
should get an answer, not the notice.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from redis_stores.helper_registry import HelperRegistry
from redis_stores.messages import TERMINAL, MessageRecord, MessageStore
from tasks.enqueue import task_message
from tasks.keys import Keys
from tasks.names import CONVERT_ATTACHMENTS, DELIVER_REPLY, HANDLE_MESSAGE
from tasks.schemas import Envelope, Reply, utcnow_iso

__all__ = ["ReplayRefused", "Replayed", "Replayer"]

# KEYS: record, outbox, deliver queue;  ARGV: message_id, now, deliver task message
_REDELIVER = """
if redis.call('HGET', KEYS[1], 'delivery') ~= 'dead' then return 0 end
redis.call('HSET', KEYS[1], 'delivery', 'replaying', 'updated_at', ARGV[2])
if not redis.call('LPOS', KEYS[2], ARGV[1]) then redis.call('RPUSH', KEYS[2], ARGV[1]) end
redis.call('LPUSH', KEYS[3], ARGV[3])
return 1
"""


class ReplayRefused(Exception):
    """The dead letter cannot (or need not) be replayed; the message says why."""


@dataclass(frozen=True)
class Replayed:
    kind: str  # "poison" | "delivery"
    message_id: str
    new_message_id: str | None  # poison: the message that answers again
    already: bool = False  # poison replayed before: nothing new was queued

    def describe(self) -> str:
        if self.kind == "delivery":
            return f"reply of {self.message_id} queued for delivery again (same webhook-id)"
        if self.already:
            return f"{self.message_id} was already replayed as {self.new_message_id}; nothing queued"
        return f"{self.message_id} queued again as {self.new_message_id}"


class Replayer:
    def __init__(self, client: redis.Redis, keys: Keys, messages: MessageStore, helpers: HelperRegistry,
                 celery: Celery) -> None:
        self.redis, self.keys, self.messages, self.helpers, self.celery = client, keys, messages, helpers, celery
        self._redeliver = client.register_script(_REDELIVER)

    def replay(self, message_id: str, kind: str | None = None) -> Replayed:
        record = self.messages.get(message_id)
        if record is None:
            raise ReplayRefused(f"{message_id}: no message record (unknown id, or older than STATUS_TTL_SECONDS)")
        kind = kind or ("poison" if record.status == "failed" else "delivery")
        if kind == "poison":
            return self._answer_again(record)
        if kind == "delivery":
            return self._deliver_again(record)
        raise ReplayRefused(f"unknown kind {kind!r}: poison or delivery")

    # -- poison: a new message answers it -------------------------------------------
    def _answer_again(self, record: MessageRecord) -> Replayed:
        if record.status != "failed":
            raise ReplayRefused(f"{record.message_id} is {record.status}, not failed: nothing to answer again")
        earlier = self.replays().get(record.message_id)
        if earlier and earlier.get("kind") == "poison":  # also past IDEMPOTENCY_TTL_SECONDS
            return Replayed("poison", record.message_id, earlier.get("new_message_id"), already=True)
        old = Envelope.from_dict(record.envelope)
        envelope = dataclasses.replace(
            old, message_id=uuid.uuid4().hex, received_at=utcnow_iso(),
            metadata={**old.metadata, "replay_of": old.message_id},
        )
        converting = self._needs_conversion(envelope)
        key = f"replay:{old.message_id}"
        extra = {"stage": "converting"} if converting else None
        task = task_message(self.celery, CONVERT_ATTACHMENTS if converting else HANDLE_MESSAGE,
                            [envelope.message_id, envelope.session_id])
        created, new_id = self.messages.admit(envelope, key, extra, task=task)  # record and task: one step
        if not created:
            return Replayed("poison", old.message_id, new_id, already=True)
        self._note(old.message_id, {"kind": "poison", "new_message_id": new_id})
        return Replayed("poison", old.message_id, new_id)

    def _needs_conversion(self, envelope: Envelope) -> bool:
        """As the edge decides (``edge.intake.to_convert``): attachments no live helper accepts."""
        if not envelope.attachments:
            return False
        capabilities = [c for helper in self.helpers.all() for c in helper.capabilities]
        return any(not any(c.accepts_mime(a.mime) for c in capabilities) for a in envelope.attachments)

    # -- delivery: the same reply goes out again ---------------------------------------
    def _deliver_again(self, record: MessageRecord) -> Replayed:
        if record.status not in TERMINAL:
            raise ReplayRefused(f"{record.message_id} is still {record.status}: it has no reply yet")
        if record.status == "failed":
            raise ReplayRefused(f"{record.message_id} failed: replay it as poison to answer it (not its notice)")
        if record.delivery != "dead":
            state = record.delivery or "not dead-lettered"
            raise ReplayRefused(f"the reply of {record.message_id} is {state}: replaying it could answer twice")
        envelope = Envelope.from_dict(record.envelope)
        if not envelope.reply.callback_url:
            raise ReplayRefused(f"{record.message_id} has no callback URL to deliver to")
        reply = record.reply or {}
        payload: dict[str, Any] = {
            **Reply(
                message_id=record.message_id, session_id=record.session_id, text=str(reply.get("text", "")),
                channel=envelope.channel, reply=envelope.reply, created_at=reply.get("created_at") or utcnow_iso(),
                prompt_tokens=int(reply.get("prompt_tokens") or 0),
                completion_tokens=int(reply.get("completion_tokens") or 0),
            ).to_dict(),
            "first_attempt_at": time.time(),
        }
        task = task_message(self.celery, DELIVER_REPLY, [payload])
        keys = [self.keys.message(record.message_id), self.keys.session_outbox(record.session_id), task.queue]
        if not self._redeliver(keys=keys, args=[record.message_id, repr(time.time()), task.payload]):
            raise ReplayRefused(f"the reply of {record.message_id} is already being replayed")
        self._note(record.message_id, {"kind": "delivery"})
        return Replayed("delivery", record.message_id, None)

    def _note(self, message_id: str, what: dict[str, Any]) -> None:
        self.redis.hset(self.keys.dead_letter_replays, message_id, json.dumps({**what, "at": utcnow_iso()}))

    def replays(self) -> dict[str, dict[str, Any]]:
        raw: dict[str, str] = self.redis.hgetall(self.keys.dead_letter_replays)  # type: ignore[assignment]
        return {mid: json.loads(value) for mid, value in raw.items()}
