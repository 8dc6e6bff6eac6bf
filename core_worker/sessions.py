"""Per-session state in Redis: the ordered inbox, the history, and a fenced lease.

Ordering: the edge appends each message to its session's inbox at
admission; only the holder of the session's lease works, and only on the
inbox's head, so one session's messages are answered strictly in arrival
order however many workers there are.

The lease is a Redis key ``"<token>|<host>|<pid>"`` with a short TTL that
the holder renews while it works.  ``token`` comes from a per-session
counter (a fencing token): every write a holder makes is checked against the
current lease in the same Lua script, so a worker that stalled past its
lease (SIGSTOP, a long GC, a partition) can never overwrite newer history.
A lease whose holder process is gone on this host is taken over at once
instead of waiting for the TTL.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from tasks.enqueue import QueuedTask
from tasks.keys import Keys

__all__ = ["Lease", "LeaseLost", "SessionStore", "Turn"]

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Our lease on the session expired and someone else may hold it: stop writing."""


@dataclass(frozen=True)
class Lease:
    session_id: str
    token: int
    head: str | None = field(default=None, compare=False)  # the inbox head when the lease was taken


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str
    message_id: str

    def to_json(self) -> str:
        return json.dumps({"role": self.role, "content": self.content, "message_id": self.message_id})

    @classmethod
    def from_json(cls, raw: str) -> Turn:
        data = json.loads(raw)
        return cls(role=data["role"], content=data["content"], message_id=data.get("message_id", ""))


_HOLDS = "local cur = redis.call('GET', KEYS[1])\n" \
         "if not cur or string.sub(cur, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then return 0 end\n"

# KEYS: lock, fence, inbox;  ARGV: ttl ms, holder "host|pid", value to take over ("" = only a free lock)
# -> false, or {token, inbox head or ""}
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[3] then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. '|' .. ARGV[2], 'PX', ARGV[1])
return {token, redis.call('LINDEX', KEYS[3], 0) or ''}
"""

# KEYS: lock;  ARGV: token, ttl ms
_RENEW = _HOLDS + "redis.call('PEXPIRE', KEYS[1], ARGV[2])\nreturn 1\n"

# KEYS: lock, inbox;  ARGV: token, message id to locate ("" = none)
# -> the message's position in the inbox, or false once it left (whether or not we still held the lease)
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then redis.call('DEL', KEYS[1]) end
if ARGV[2] == '' then return false end
return redis.call('LPOS', KEYS[2], ARGV[2])
"""

# KEYS: lock, inbox, pending sessions, task queue (may be "")
# ARGV: token, message_id, session_id, task message ("" = none)  -> {1, next head or ""}
_POP = _HOLDS + """
if redis.call('LINDEX', KEYS[2], 0) == ARGV[2] then redis.call('LPOP', KEYS[2]) end
if ARGV[4] ~= '' then redis.call('LPUSH', KEYS[4], ARGV[4]) end
local head = redis.call('LINDEX', KEYS[2], 0)
if not head then redis.call('SREM', KEYS[3], ARGV[3]) end
return {1, head or ''}
"""

# Start an attempt at the inbox head: count it, mark it processing (waking long polls), and read the
# session's history, in one round trip.
# The count stops at max attempts: one more is returned (give up) but never stored, so a record's attempts
# never exceed MAX_ATTEMPTS.
# KEYS: lock, inbox, record, events, history;  ARGV: token, message_id, now, status ttl, max attempts
# -> {attempts, history item, ...}, or -1 when the message is no longer the head
_BEGIN = _HOLDS + """
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return -1 end
local attempts = tonumber(redis.call('HGET', KEYS[3], 'attempts') or '0') or 0
if attempts < tonumber(ARGV[5]) then
  attempts = redis.call('HINCRBY', KEYS[3], 'attempts', 1)
else
  attempts = attempts + 1
end
if redis.call('HGET', KEYS[3], 'status') ~= 'processing' then
  redis.call('HSET', KEYS[3], 'status', 'processing', 'updated_at', ARGV[3])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
  redis.call('PUBLISH', KEYS[4], 'processing')
end
local result = redis.call('LRANGE', KEYS[5], 0, -1)
table.insert(result, 1, attempts)
return result
"""

# KEYS: lock, inbox, record;  ARGV: token, message_id, field, value, ...
_SET_FIELDS = _HOLDS + """
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return -1 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Record the head's outcome, queue its delivery (outbox place + Celery task) and pop it: one atomic step,
# so a crash leaves either an unanswered head (answered again) or a finished, queued, popped one.
# KEYS: lock, inbox, history, record, events, outbox, pending sessions, delivery queue (may be "")
# ARGV: token, message_id, status, status ttl, session ttl, max history items, now,
#       field name, field value, delivery task message ("" = none), session_id, [turn json ...]
# -> {1, next head or ""}, or -1 when the message is no longer the head
_FINISH = _HOLDS + """
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return -1 end
if ARGV[10] ~= '' then
  if not redis.call('LPOS', KEYS[6], ARGV[2]) then redis.call('RPUSH', KEYS[6], ARGV[2]) end
  redis.call('LPUSH', KEYS[8], ARGV[10])
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'status', ARGV[3], ARGV[8], ARGV[9], 'updated_at', ARGV[7])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
end
if #ARGV > 11 then
  for i = 12, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[6]), -1)
end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[5]) end
redis.call('PUBLISH', KEYS[5], ARGV[3])
redis.call('LPOP', KEYS[2])
local head = redis.call('LINDEX', KEYS[2], 0)
if not head then redis.call('SREM', KEYS[7], ARGV[11]) end
return {1, head or ''}
"""


def _turns(items: list[Any], session_id: str) -> list[Turn]:
    """The history's turns; an item that does not parse is skipped, so one bad item cannot fail every later
    message of the session."""
    turns: list[Turn] = []
    for item in items:
        try:
            turns.append(Turn.from_json(item))
        except (ValueError, KeyError, TypeError):
            log.warning("skipping an unreadable history item of session %s", session_id)
    return turns


def _holder_alive(value: str) -> bool:
    """False only when we can prove the holder is dead: same host, its pid gone."""
    try:
        _token, host, pid = value.split("|")
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


class SessionStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        lease_seconds: float,
        session_ttl: int,
        status_ttl: int,
        max_turns: int,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.lease_ms = int(lease_seconds * 1000)
        self.session_ttl = session_ttl
        self.status_ttl = status_ttl
        self.max_items = max_turns * 2
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._pop = client.register_script(_POP)
        self._finish = client.register_script(_FINISH)
        self._set_fields = client.register_script(_SET_FIELDS)
        self._begin = client.register_script(_BEGIN)

    # -- lease -------------------------------------------------------------
    def acquire(self, session_id: str) -> Lease | None:
        """Take the session's lease, or None while a live worker holds it."""
        lock, fence = self.keys.session_lock(session_id), self.keys.session_fence(session_id)
        keys = [lock, fence, self.keys.session_inbox(session_id)]
        holder = f"{socket.gethostname()}|{os.getpid()}"  # pid changes after fork
        taken = self._acquire(keys=keys, args=[self.lease_ms, holder, ""])
        if taken is None:
            current = self.redis.get(lock)
            if current is None or _holder_alive(str(current)):
                return None
            taken = self._acquire(keys=keys, args=[self.lease_ms, holder, current])
            if taken is None:
                return None
        token, head = taken
        return Lease(session_id, int(token), str(head) or None)

    def renew(self, lease: Lease) -> bool:
        return bool(self._renew(keys=[self.keys.session_lock(lease.session_id)], args=[lease.token, self.lease_ms]))

    def release(self, lease: Lease, locate: str = "") -> int | None:
        """Give the lease up; the position of ``locate`` in the inbox (None once it left), same round trip."""
        keys = [self.keys.session_lock(lease.session_id), self.keys.session_inbox(lease.session_id)]
        position = self._release(keys=keys, args=[lease.token, locate])
        return None if position is None else int(position)

    def begin(self, lease: Lease, message_id: str, max_attempts: int = 1_000_000) -> tuple[int, list[Turn]]:
        """Count an attempt at the head and mark it processing; (attempts, the session's history).

        Past ``max_attempts`` the count is ``max_attempts + 1`` (give up) and is not stored."""
        sid = lease.session_id
        keys = [self.keys.session_lock(sid), self.keys.session_inbox(sid), self.keys.message(message_id),
                self.keys.message_events(message_id), self.keys.session_history(sid)]
        result = self._begin(keys=keys, args=[lease.token, message_id, repr(time.time()), self.status_ttl,
                                              max_attempts])
        if not isinstance(result, list):
            raise LeaseLost(f"{sid}: lease lost or {message_id} is no longer the head (result {result})")
        return int(result[0]), _turns(result[1:], sid)

    # -- inbox and history -------------------------------------------------
    def head(self, session_id: str) -> str | None:
        value = self.redis.lindex(self.keys.session_inbox(session_id), 0)
        return str(value) if value is not None else None

    def pending(self, session_id: str) -> int:
        return int(self.redis.llen(self.keys.session_inbox(session_id)))

    def history(self, session_id: str) -> list[Turn]:
        raw: list[Any] = self.redis.lrange(self.keys.session_history(session_id), 0, -1)
        return _turns(raw, session_id)

    def pop(self, lease: Lease, message_id: str, task: QueuedTask | None = None) -> str | None:
        """Remove the finished head (queueing ``task`` in the same step); the next head, None when empty."""
        sid = lease.session_id
        keys = [self.keys.session_lock(sid), self.keys.session_inbox(sid), self.keys.pending_sessions,
                task.queue if task else ""]
        result = self._pop(keys=keys, args=[lease.token, message_id, sid, task.payload if task else ""])
        if not result:
            raise LeaseLost(f"{sid}: lease lost or {message_id} is no longer the head (pop refused)")
        return str(result[1]) or None

    def set_fields(self, lease: Lease, message_id: str, fields: dict[str, str]) -> None:
        """Write fields of the inbox head's record iff we still hold the lease."""
        sid = lease.session_id
        keys = [self.keys.session_lock(sid), self.keys.session_inbox(sid), self.keys.message(message_id)]
        args: list[Any] = [lease.token, message_id]
        for name, value in fields.items():
            args += [name, value]
        if self._set_fields(keys=keys, args=args) != 1:
            raise LeaseLost(f"{sid}: lease lost or {message_id} is no longer the head")

    def finish(
        self,
        lease: Lease,
        message_id: str,
        *,
        status: str,
        field: str,
        value: str,
        turns: tuple[Turn, ...] = (),
        delivery: QueuedTask | None = None,
    ) -> str | None:
        """Record the outcome of the inbox head (its turns; its delivery: outbox place and task) and pop it,
        iff we hold the lease; the next head, None when the inbox is empty."""
        sid = lease.session_id
        keys = [
            self.keys.session_lock(sid),
            self.keys.session_inbox(sid),
            self.keys.session_history(sid),
            self.keys.message(message_id),
            self.keys.message_events(message_id),
            self.keys.session_outbox(sid),
            self.keys.pending_sessions,
            delivery.queue if delivery else "",
        ]
        args: list[Any] = [
            lease.token, message_id, status, self.status_ttl, self.session_ttl, self.max_items,
            repr(time.time()), field, value, delivery.payload if delivery else "", sid,
        ]
        args += [turn.to_json() for turn in turns]
        result = self._finish(keys=keys, args=args)
        if not isinstance(result, list):
            raise LeaseLost(f"{sid}: lease lost or {message_id} is no longer the head (result {result})")
        return str(result[1]) or None
