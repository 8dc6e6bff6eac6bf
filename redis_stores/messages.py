"""Message records in Redis: admission, status and waiting for an answer.

A message is admitted in one atomic step (Lua): its record, its place at
the end of its session's inbox, its idempotency key, its owner's open-message
count and its Celery task message (pushed straight onto the broker's queue,
``tasks/enqueue.py``) are written together, so a crash can never leave half
of them and no admitted message lacks its task.  A Redis that cannot take
the step leaves nothing written, and the client gets 503.

Status moves queued -> processing -> answered | failed; every change is
published on the message's channel so long polls wake at once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from tasks.enqueue import QueuedTask
from tasks.keys import Keys
from tasks.schemas import Envelope

__all__ = ["STATUSES", "TERMINAL", "MessageRecord", "MessageStore", "QuotaExceeded", "public_error", "settled"]

STATUSES = ("queued", "processing", "answered", "failed")
TERMINAL = frozenset({"answered", "failed"})

# What a person may read of why their message failed; the operator's reason (exception text included) stays
# in the record's ``error``, the logs, the dead letters and the status page.
PUBLIC_ERRORS = (  # (the start of an operator's reason, the phrase a person reads)
    (("PromptTooLarge:", "GenerationError: prompt is"), "the message was too long to answer"),
    (("SoftTimeLimitExceeded", "TimeLimitExceeded"), "answering the message took too long"),
)
GENERIC_PUBLIC_ERROR = "the message could not be answered"


def public_error(reason: str) -> str:
    """A short, safe phrase for ``reason``: never the exception text, which can name internals."""
    for needles, phrase in PUBLIC_ERRORS:
        if reason.startswith(needles):
            return phrase
    return GENERIC_PUBLIC_ERROR


# KEYS: record, inbox, idempotency (may be ""), pending sessions, task queue (may be ""), the owner's open
#       messages (may be "")
# ARGV: message_id, envelope json, session_id, now, status ttl, idempotency ttl, task message ("" = none),
#       open-message quota, record key prefix, [field, value, ...]
# The owner's open set is pruned only when it is full: every member whose record ended (or expired) leaves,
# so the common admission is O(1) and a full one O(quota); a release missed by a crash cannot leak a slot.
_ADMIT = """
if KEYS[3] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {0, existing} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, ARGV[1]} end  -- a client retry of this very call
if KEYS[6] ~= '' then
  local quota = tonumber(ARGV[8])
  if redis.call('ZCARD', KEYS[6]) >= quota then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do
      local status = redis.call('HGET', ARGV[9] .. id, 'status')
      if not status or status == 'answered' or status == 'failed' then redis.call('ZREM', KEYS[6], id) end
    end
    local open = redis.call('ZCARD', KEYS[6])
    if open >= quota then return {-1, tostring(open)} end
  end
  redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
  redis.call('EXPIRE', KEYS[6], ARGV[5])
end
redis.call('HSET', KEYS[1], 'message_id', ARGV[1], 'envelope', ARGV[2], 'session_id', ARGV[3],
           'status', 'queued', 'created_at', ARGV[4], 'updated_at', ARGV[4], 'attempts', 0)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[3])
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[6]) end
for i = 10, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[7] ~= '' then redis.call('LPUSH', KEYS[5], ARGV[7]) end
return {1, ARGV[1]}
"""

# KEYS: record, events channel;  ARGV: ttl, status-or-"", field, value, field, value, ...
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
"""

# KEYS: record, events;  ARGV: call_id, result json, now
_COMPLETE_CALL = """
if redis.call('HGET', KEYS[1], 'stage') ~= 'awaiting_helper' then return 0 end
if redis.call('HGET', KEYS[1], 'call_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'stage', 'helper_done', 'call_result', ARGV[2], 'updated_at', ARGV[3])
redis.call('PUBLISH', KEYS[2], 'helper_done')
return 1
"""

@dataclass(frozen=True)
class MessageRecord:
    message_id: str
    session_id: str
    status: str
    envelope: dict[str, Any]
    reply: dict[str, Any] | None
    error: str | None
    attempts: int
    delivery: str | None
    created_at: float
    updated_at: float
    stage: str | None = None  # None, "converting" (media), "awaiting_helper" or "helper_done" (helper call)
    call: dict[str, Any] | None = None
    call_result: dict[str, Any] | None = None
    partial: str | None = None  # the reply so far, while a streaming channel's message is being answered
    partial_seq: int = 0
    owner: str | None = None  # the client door's caller who created it (edge/clients.py); None: a channel's

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> MessageRecord:
        return cls(
            message_id=data["message_id"],
            session_id=data.get("session_id", ""),
            status=data.get("status", "queued"),
            envelope=json.loads(data.get("envelope") or "{}"),
            reply=json.loads(data["reply"]) if data.get("reply") else None,
            error=data.get("error") or None,
            attempts=int(data.get("attempts") or 0),
            delivery=data.get("delivery") or None,
            created_at=float(data.get("created_at") or 0),
            updated_at=float(data.get("updated_at") or 0),
            stage=data.get("stage") or None,
            call=json.loads(data["call"]) if data.get("call") else None,
            call_result=json.loads(data["call_result"]) if data.get("call_result") else None,
            partial=data.get("partial"),
            partial_seq=int(data.get("partial_seq") or 0),
            owner=data.get("owner") or None,
        )

    def public(self) -> dict[str, Any]:
        """The JSON shape of ``GET /v1/messages/<id>`` (DESIGN.md)."""
        body: dict[str, Any] = {
            "message_id": self.message_id,
            "session_id": self.session_id,
            "status": self.status,
            "reply": self.reply,
        }
        if self.error:
            body["error"] = public_error(self.error)
        if self.delivery:
            body["delivery"] = self.delivery
        if self.partial is not None and self.status not in TERMINAL:
            body["partial"] = {"seq": self.partial_seq, "text": self.partial}
        return body


def settled(record: MessageRecord | None, after_partial: int | None = None) -> bool:
    """Whether a long poll on this record has nothing left to wait for: gone, ended, or (given
    ``after_partial``) showing a partial reply newer than that sequence number."""
    return record is None or record.status in TERMINAL or (
        after_partial is not None and record.partial_seq > after_partial)


class QuotaExceeded(Exception):
    """The owner already has its quota of open messages (``QUOTA_OPEN_MESSAGES``); nothing was written."""

    def __init__(self, open_messages: int) -> None:
        super().__init__(f"{open_messages} messages are still open")
        self.open_messages = open_messages


class MessageStore:
    def __init__(self, client: redis.Redis, keys: Keys, *, status_ttl: int, idempotency_ttl: int) -> None:
        self.redis = client
        self.keys = keys
        self.status_ttl = status_ttl
        self.idempotency_ttl = idempotency_ttl
        self._admit = client.register_script(_ADMIT)
        self._update = client.register_script(_UPDATE)
        self._complete_call = client.register_script(_COMPLETE_CALL)

    def _admit_keys(self, envelope: Envelope, idempotency_key: str | None) -> list[str]:
        idem = self.keys.idempotency(envelope.channel, idempotency_key) if idempotency_key else ""
        return [self.keys.message(envelope.message_id), self.keys.session_inbox(envelope.session_id), idem,
                self.keys.pending_sessions]

    def admit(
        self,
        envelope: Envelope,
        idempotency_key: str | None = None,
        extra: dict[str, str] | None = None,
        *,
        task: QueuedTask | None = None,
        owner: str | None = None,
        open_quota: int = 0,
    ) -> tuple[bool, str]:
        """Record ``envelope`` in its session and queue ``task``, in one atomic step; (False, earlier id)
        and nothing written if the idempotency key was seen before.

        ``extra`` fields are written with the record (e.g. ``stage="converting"``). With ``owner`` and an
        ``open_quota`` above 0, QuotaExceeded (and nothing written) while the owner has that many messages
        neither answered nor failed."""
        pairs = [item for name, value in (extra or {}).items() for item in (name, value)]
        open_key = self.keys.owner_open(owner) if owner and open_quota > 0 else ""
        created, message_id = self._admit(
            keys=[*self._admit_keys(envelope, idempotency_key), task.queue if task else "", open_key],
            args=[
                envelope.message_id,
                json.dumps(envelope.to_dict()),
                envelope.session_id,
                repr(time.time()),
                self.status_ttl,
                self.idempotency_ttl,
                task.payload if task else "",
                open_quota,
                self.keys.message(""),
                *pairs,
            ],
        )
        if int(created) < 0:
            raise QuotaExceeded(int(message_id))
        return bool(created), str(message_id)

    def get(self, message_id: str) -> MessageRecord | None:
        data = self.get_raw(message_id)
        return MessageRecord.from_hash(data) if data else None

    def get_raw(self, message_id: str) -> dict[str, str]:
        """The record's fields as stored, unparsed (empty when there is none): what the poison path works from."""
        data: dict[str, str] = self.redis.hgetall(self.keys.message(message_id))  # type: ignore[assignment]
        return data

    def update(self, message_id: str, **fields_: str | int | float) -> bool:
        """Set fields of an existing record (never resurrect an expired one) and wake long polls."""
        args: list[str | int | float] = [self.status_ttl, str(fields_.get("status", "update"))]
        for name, value in {**fields_, "updated_at": repr(time.time())}.items():
            args += [name, value]
        keys = [self.keys.message(message_id), self.keys.message_events(message_id)]
        return bool(self._update(keys=keys, args=args))

    def complete_call(self, message_id: str, call_id: str, result: dict[str, Any]) -> bool:
        """Record a helper call's result iff the message still waits for exactly that call."""
        keys = [self.keys.message(message_id), self.keys.message_events(message_id)]
        return bool(self._complete_call(keys=keys, args=[call_id, json.dumps(result), repr(time.time())]))

    def wait(self, message_id: str, timeout: float, after_partial: int | None = None) -> MessageRecord | None:
        """The record, waiting up to ``timeout`` seconds for it to become answered or failed
        (or, given ``after_partial``, to show a partial reply newer than that sequence number)."""

        def done(record: MessageRecord | None) -> bool:
            return settled(record, after_partial)

        record = self.get(message_id)
        if done(record) or timeout <= 0:
            return record
        deadline = time.monotonic() + timeout
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.keys.message_events(message_id))
            while True:
                # Read after subscribing: a change between the first read and
                # the subscription would otherwise be missed.
                record = self.get(message_id)
                remaining = deadline - time.monotonic()
                if done(record) or remaining <= 0:
                    return record
                pubsub.get_message(timeout=min(remaining, 1.0))
        finally:
            pubsub.close()
