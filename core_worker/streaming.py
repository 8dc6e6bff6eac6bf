"""Showing a reply while the model writes it: throttled, numbered, fenced, best effort.

A streaming backend calls a :class:`PartialStream` after every token (see
``core_worker.llm.base.Progress``).  The stream checks a monotonic clock and only
when a partial is due decodes the text so far and publishes it:

- into the message record (``partial``, ``partial_seq``) with a Lua script that
  first checks the session lease and that the message is still the inbox head,
  so a stale worker (lease lost to another) can never publish; the record's
  pub/sub channel wakes ``GET /v1/messages/<id>?partial=<seq>`` long polls;
- for a provider channel (Telegram, Slack: the route has a callback and asked
  for streaming), as a ``deliver.deliver_partial`` task with a short expiry
  that POSTs one signed ``message.partial`` callback and is never retried.

Publishing happens between tokens (no extra thread): at most one Lua call and
one task send per ``STREAM_INTERVAL_SECONDS``, about a millisecond each, while
tokens take 15+ ms.  Partials never touch the final reply: that is still
written by ``SessionStore.finish`` and delivered exactly once via the outbox.
A failure to publish ends the message's partials, never its answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from core_worker.sessions import Lease
from tasks.keys import Keys
from tasks.schemas import Envelope

__all__ = ["PartialPublisher", "PartialStream", "PartialThrottle", "complete_word"]

log = logging.getLogger(__name__)

# KEYS: lock, inbox, record, events;  ARGV: token, message_id, seq, text, now
# The first two lines are SessionStore's lease check: only the lease holder writes.
_PUBLISH = """
local cur = redis.call('GET', KEYS[1])
if not cur or string.sub(cur, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then return 0 end
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local status = redis.call('HGET', KEYS[3], 'status')
if status == 'answered' or status == 'failed' then return 0 end
if tonumber(redis.call('HGET', KEYS[3], 'partial_seq') or '0') >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[3], 'partial', ARGV[4], 'partial_seq', ARGV[3], 'updated_at', ARGV[5])
redis.call('PUBLISH', KEYS[4], 'partial')
return 1
"""


def complete_word(text: str) -> bool:
    """True once ``text`` holds a whole word: some non-space followed by a space."""
    stripped = text.lstrip()
    return any(ch.isspace() for ch in stripped) and bool(stripped.strip())


@dataclass
class PartialThrottle:
    """When a partial is worth publishing, and its sequence number (pure; the clock is passed in).

    The first partial goes out as soon as the text holds a complete word or ``first_chars``
    characters; later ones at most every ``interval`` seconds and only if the text grew.
    """

    interval: float
    first_chars: int
    seq: int = 0
    last_text: str = ""
    next_due: float = field(default=float("-inf"))

    def due(self, now: float) -> bool:
        """Cheap check done after every token, before the text is decoded."""
        return now >= self.next_due

    def accept(self, text: str, now: float) -> int | None:
        """The sequence number to publish ``text`` under, or None (too short, or nothing new)."""
        text = text.strip()
        if not text or text == self.last_text:
            return None
        if self.seq == 0 and len(text) < self.first_chars and not complete_word(text):
            return None
        self.seq += 1
        self.last_text = text
        self.next_due = now + self.interval
        return self.seq


class PartialStream:
    """The per-message progress callback: throttles, then publishes; stops for good on a refusal."""

    def __init__(
        self, throttle: PartialThrottle, publish: Callable[[int, str], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.throttle, self.publish, self.clock = throttle, publish, clock
        self.closed = False
        self.published = 0

    def __call__(self, text_so_far: Callable[[], str]) -> None:
        if self.closed:
            return
        now = self.clock()
        if not self.throttle.due(now):
            return
        seq = self.throttle.accept(text_so_far(), now)
        if seq is None:
            return
        try:
            accepted = self.publish(seq, self.throttle.last_text)
        except Exception:  # best effort: a Redis or broker blip ends the partials, never the answer
            log.warning("partial %d could not be published; no more partials for this message", seq, exc_info=True)
            accepted = False
        if accepted:
            self.published += 1
        else:
            self.closed = True


@dataclass
class PartialPublisher:
    """Opens a :class:`PartialStream` for a message whose channel asked for streaming."""

    redis: redis.Redis
    keys: Keys
    interval: float  # STREAM_INTERVAL_SECONDS: the floor of every channel's interval
    first_chars: int
    send_partial: Callable[[dict[str, Any]], None]  # queues deliver.deliver_partial
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._publish = self.redis.register_script(_PUBLISH)

    def open(self, lease: Lease, envelope: Envelope) -> PartialStream | None:
        """A stream for ``envelope``, or None when its channel shows only finished replies."""
        wanted = envelope.reply.stream_interval
        if wanted <= 0 or self.interval <= 0:
            return None
        throttle = PartialThrottle(interval=max(wanted, self.interval), first_chars=self.first_chars)
        return PartialStream(throttle, lambda seq, text: self.publish(lease, envelope, seq, text), self.clock)

    def publish(self, lease: Lease, envelope: Envelope, seq: int, text: str) -> bool:
        """Record the partial (fenced) and, for a provider channel, queue its callback; False if refused."""
        sid, mid = lease.session_id, envelope.message_id
        keys = [self.keys.session_lock(sid), self.keys.session_inbox(sid), self.keys.message(mid),
                self.keys.message_events(mid)]
        if not self._publish(keys=keys, args=[lease.token, mid, seq, text, repr(time.time())]):
            log.info("partial %d of %s refused (lease lost or message finished)", seq, mid)
            return False
        if envelope.reply.callback_url and wants_partial_callbacks(envelope):
            self.send_partial({
                "message_id": mid, "session_id": envelope.session_id, "channel": envelope.channel,
                "callback_url": envelope.reply.callback_url, "context": envelope.reply.context,
                "seq": seq, "text": text,
            })
        return True


def wants_partial_callbacks(envelope: Envelope) -> bool:
    """Provider channels get ``message.partial`` callbacks; an API client's ``reply_url`` gets only the
    final reply (API clients read partials from ``GET /v1/messages/<id>``)."""
    return envelope.channel != "api"
