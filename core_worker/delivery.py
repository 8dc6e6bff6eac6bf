"""Delivering a reply to its callback URL: signed, retried, dead-lettered, never twice on purpose.

The callback is a Standard Webhooks POST whose ``webhook-id`` is the
message id, so a receiver can drop the rare duplicate that at-least-once
delivery allows (a worker dying between the POST and recording success).

Replies of one session are delivered in the order they were answered: the
core appends each to the session's outbox when it finishes the message, and
only the outbox head is posted; it leaves the outbox once delivered or
dead-lettered.  A reply not in the outbox is done, so a repeated delivery
task does nothing; a claim key keeps two workers off the same head.

Outcomes by the receiver's answer: 2xx delivered; 408/425/429/5xx and
network errors retried with exponential backoff and full jitter until
``DELIVERY_MAX_AGE``; any other 4xx, or a URL the allow-list refuses, is
permanent and goes straight to the dead-letter list.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from core_worker.outbound_post import post
from outbound_http.host_policy import BlockedURL, HostPolicy, OutboundError
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.schemas import Reply
from tasks.settings import Settings
from tasks.signing import sign_headers

__all__ = ["Deliverer", "Outcome", "backoff_delay", "callback_body"]

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429})


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"  # already delivered or dead-lettered
    WAIT = "wait"  # an earlier reply of the session goes first, or another worker is posting this one
    RETRY = "retry"
    DEAD = "dead"


# One round trip to decide whether this worker posts the reply now.  An attempt at the head also marks its
# task alive until its next retry is due at the latest; past that the sweeper re-sends it (a task lost with
# its io worker).
# The claim holds the task's id: the same task coming back (its retry) takes over its own claim.  A claim
# can outlive its attempt without anyone holding it: a CLAIM sent just before Redis froze runs when Redis
# thaws, after the worker gave the call up (a socket timeout) and scheduled its retry; with an anonymous
# claim every retry then waited for it to expire (31 s after the thaw in sigstop-30s runs).
# But two copies of one task can run at once (an io worker killed between publishing a retry and acking
# the message it retried: both come back), and both would pass the claim: so each attempt that posts also
# holds the posting lease, a nonce that lives as long as a POST can (its deadline) and that only its own
# outcome removes.  A claim without a lease is one nobody is posting under.
# A reply to a client's reply_url also takes one of its client's delivery slots (a zset of message ids
# scored by when the slot lapses, with the posting lease): a client whose receiver is slow holds at most
# ``slots`` delivery threads, never the whole pool.
# KEYS: outbox, claim, alive, the client's slots, posting lease;  ARGV: message_id, claim seconds, alive
#       seconds, owner (the task id), slots (0: no bound), now, lease nonce, lease milliseconds
# -> -1 not in the outbox (done), -2 another worker holds the claim or is posting, -3 the client's slots are
#    taken, 0 claimed, n>0 earlier replies first
_CLAIM = """
local position = redis.call('LPOS', KEYS[1], ARGV[1])
if not position then return -1 end
if position > 0 then return position end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[3])
local holder = redis.call('GET', KEYS[2])
if holder and not (ARGV[4] ~= '' and holder == ARGV[4]) then return -2 end
if redis.call('EXISTS', KEYS[5]) == 1 then return -2 end
local slots = tonumber(ARGV[5])
if slots > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[6])
  if not redis.call('ZSCORE', KEYS[4], ARGV[1]) and redis.call('ZCARD', KEYS[4]) >= slots then return -3 end
  redis.call('ZADD', KEYS[4], tonumber(ARGV[6]) + tonumber(ARGV[8]) / 1000, ARGV[1])
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[2])
redis.call('SET', KEYS[5], ARGV[7], 'PX', ARGV[8])
return 0
"""

# One round trip to record the outcome: leave the outbox (delivered or dead), note it on the message
# record (never resurrecting an expired one) and wake its long polls, drop the claim.
# KEYS: outbox, claim, record, events, the client's slots, posting lease;  ARGV: message_id, "1" to leave the
#       outbox, status ttl, now, lease nonce, field, value, ...
_SETTLE = """
if ARGV[2] == '1' and redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) end
if #ARGV > 5 and redis.call('EXISTS', KEYS[3]) == 1 then
  for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[3], 'updated_at', ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  redis.call('PUBLISH', KEYS[4], 'update')
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[5], ARGV[1])
if redis.call('GET', KEYS[6]) == ARGV[5] then redis.call('DEL', KEYS[6]) end
return 1
"""


def callback_body(reply: Reply) -> str:
    """The JSON a reply_url or channel callback receives."""
    return json.dumps(
        {
            "type": "message.reply",
            "message_id": reply.message_id,
            "session_id": reply.session_id,
            "channel": reply.channel,
            "status": reply.status,
            "text": reply.text,
            "error": reply.error,
            "context": reply.reply.context,
            "created_at": reply.created_at,
        },
        separators=(",", ":"),
    )


def backoff_delay(retries: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter (spreads a thundering herd after an outage)."""
    return rng() * min(cap, base * (2 ** min(retries, 30)))


@dataclass
class Deliverer:
    settings: Settings
    keys: Keys
    redis: redis.Redis
    messages: MessageStore
    policy: HostPolicy
    dead_letter: Callable[[str, str, str], None]

    def __post_init__(self) -> None:
        self._claim = self.redis.register_script(_CLAIM)
        self._settle_script = self.redis.register_script(_SETTLE)

    def attempt(self, payload: dict[str, Any], owner: str = "") -> tuple[Outcome, str]:
        """One delivery attempt by the task ``owner`` (its id: its own earlier claim does not block it)."""
        reply = Reply.from_dict(payload)
        url = reply.reply.callback_url
        if not url:
            return Outcome.DUPLICATE, "no callback URL"
        client = reply.reply.owner
        slots_key = self.keys.owner_deliveries(client)
        slots = self.settings.delivery_concurrency_per_client if client else 0
        keys = [self.keys.session_outbox(reply.session_id), self.keys.delivery_claim(reply.message_id)]
        claim_seconds = int(self.settings.delivery_timeout * 3) + 1
        alive_seconds = int(self.settings.delivery_backoff_max + self.settings.delivery_timeout) + 5
        lease = [self.keys.delivery_posting(reply.message_id), uuid.uuid4().hex]
        lease_ms = int((self.settings.delivery_timeout + 2) * 1000)  # a POST is cut at its deadline
        position = int(self._claim(keys=[*keys, self.keys.delivery_alive(reply.message_id), slots_key, lease[0]],
                                   args=[reply.message_id, claim_seconds, alive_seconds, owner, slots,
                                         repr(time.time()), lease[1], lease_ms]))
        if position == -1:
            return Outcome.DUPLICATE, "already delivered or dead-lettered"
        if position == -2:
            return Outcome.WAIT, "another worker is delivering it"
        if position == -3:
            return Outcome.WAIT, f"{slots} other replies to this client's reply URLs are being posted"
        if position:
            return Outcome.WAIT, f"{position} earlier replies of the session go first"
        fields: dict[str, str] = {}
        try:
            outcome, detail = self._settle(reply, payload, *self._post(reply, url))
            if outcome is Outcome.DELIVERED:
                fields = {"delivery": "delivered"}
            elif outcome is Outcome.DEAD:
                fields = {"delivery": "dead", "delivery_error": detail}
            return outcome, detail
        finally:
            self._record(reply.message_id, keys, fields, slots_key, lease)

    def _record(self, message_id: str, keys: list[str], fields: dict[str, str], slots_key: str,
                lease: list[str]) -> None:
        """Leave the outbox iff finished, note the outcome on the record, release the claim: one round trip.

        Retried for up to ``DELIVERY_TIMEOUT`` while Redis does not answer: a POST that reached the receiver
        but was never recorded is posted again later (found by the fault suite: Redis frozen right after
        the POST), and an unreleased claim holds the retries back until it expires."""
        args: list[str | int] = [message_id, "1" if fields else "0", self.messages.status_ttl, repr(time.time()),
                                 lease[1]]
        for name, value in fields.items():
            args += [name, value]
        keys = [*keys, self.keys.message(message_id), self.keys.message_events(message_id), slots_key, lease[0]]
        deadline = time.monotonic() + self.settings.delivery_timeout
        while True:
            try:
                self._settle_script(keys=keys, args=args)
                return
            except redis.RedisError:
                if time.monotonic() >= deadline:
                    raise
                log.warning("recording the delivery of %s failed; trying again", message_id, exc_info=True)
                time.sleep(0.5)

    def _post(self, reply: Reply, url: str) -> tuple[Outcome, str]:
        if not self.settings.switchboard_secret:
            return Outcome.RETRY, "SWITCHBOARD_SECRET is not set: cannot sign callbacks"
        body = callback_body(reply)
        headers = sign_headers(self.settings.switchboard_secret, reply.message_id, body)
        headers["user-agent"] = "switchboard-delivery/1"
        try:
            result = post(
                self.policy, url, body.encode(), headers,
                timeout=self.settings.delivery_timeout, max_response_bytes=self.settings.max_reply_bytes,
            )
        except BlockedURL as exc:
            return Outcome.DEAD, f"callback URL refused: {exc}"
        except OutboundError as exc:
            return Outcome.RETRY, str(exc)
        if 200 <= result.status < 300:
            return Outcome.DELIVERED, f"HTTP {result.status}"
        detail = f"HTTP {result.status}: {result.body[:200].decode('utf-8', 'replace')}"
        if result.status in RETRYABLE_STATUS or result.status >= 500:
            return Outcome.RETRY, detail
        return Outcome.DEAD, detail

    def _settle(self, reply: Reply, payload: dict[str, Any], outcome: Outcome, detail: str) -> tuple[Outcome, str]:
        if outcome is Outcome.RETRY:
            age = time.time() - float(payload.get("first_attempt_at") or time.time())
            if age <= self.settings.delivery_max_age:
                log.info("delivery of %s will be retried: %s", reply.message_id, detail)
                return outcome, detail
            outcome, detail = Outcome.DEAD, f"gave up after {age:.0f}s: {detail}"
        if outcome is Outcome.DEAD:
            log.warning("delivery of %s dead-lettered: %s", reply.message_id, detail)
            self.dead_letter("delivery", reply.message_id, detail)
        return outcome, detail
