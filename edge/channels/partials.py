"""A reply shown while it is written, on providers that can edit a sent message (Telegram, Slack).

The core POSTs ``message.partial`` callbacks (numbered ``seq``, best effort, never
retried) and then, as always, the final ``message.reply`` (retried until sent,
once per part).  Per message, Redis keeps which provider message shows the
partial text (``id``: Telegram's message_id, Slack's ts), the last ``seq``
shown, a ``final`` flag and a rate-limit ``hold_until``:

- the first partial posts a new provider message, later ones edit it; one at a
  time per message (a short lock: a partial that finds it taken is dropped, the
  next one carries newer text anyway), never an older ``seq`` after a newer one;
- the final reply first sets ``final`` (waiting for a partial in flight to finish),
  so no partial can touch the message afterwards, then edits the provider message
  into its first part and sends the other parts as usual.

Losing a partial costs nothing but a less lively display; the final reply's
guarantees (each part sent once, retried until sent) are the channel's ``send``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from edge.channels.splitting import clip
from tasks.keys import Keys

__all__ = ["PartialBackoff", "PartialBusy", "PartialUpdate", "ShownReplies", "partial_text"]

log = logging.getLogger(__name__)

ELLIPSIS = " …"  # marks a reply still being written

# KEYS: lock;  ARGV: token
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class PartialBackoff(Exception):
    """The provider asked us to slow down: no partials for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"rate limited for {seconds:g}s")
        self.seconds = seconds


class PartialBusy(Exception):
    """A partial update kept the message locked longer than the final reply waits."""


@dataclass(frozen=True)
class PartialUpdate:
    """The body of a ``message.partial`` callback (docs/api.md, "The callback")."""

    message_id: str
    session_id: str
    channel: str
    seq: int
    text: str
    context: dict[str, Any]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PartialUpdate:
        seq = body["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError("seq must be a positive integer")
        return cls(message_id=str(body["message_id"]), session_id=str(body["session_id"]),
                   channel=str(body["channel"]), seq=seq, text=str(body["text"]),
                   context=dict(body.get("context") or {}))


def partial_text(text: str, limit: int) -> str:
    """What a provider message shows of a reply still being written: its start, marked unfinished."""
    room = limit - len(ELLIPSIS)
    return clip(text.strip(), room).rstrip() + ELLIPSIS


class ShownReplies:
    """Which provider message shows each message's partial reply, and whether the final took it over."""

    def __init__(self, client: redis.Redis, keys: Keys, channel: str, *, ttl: int, lock_seconds: float) -> None:
        self.redis, self.keys, self.channel = client, keys, channel
        self.ttl, self.lock_ms = ttl, int(lock_seconds * 1000)
        self._release = client.register_script(_RELEASE)

    def key(self, message_id: str) -> str:
        return self.keys.partial_reply(self.channel, message_id)

    def lock_key(self, message_id: str) -> str:
        return self.keys.partial_reply_lock(self.channel, message_id)

    def show(self, update: PartialUpdate, post: Callable[[], str], edit: Callable[[str], None]) -> str:
        """Show ``update`` (``post`` a new provider message, or ``edit`` the one shown); what happened."""
        key, lock, token = self.key(update.message_id), self.lock_key(update.message_id), uuid.uuid4().hex
        if not self.redis.set(lock, token, nx=True, px=self.lock_ms):
            return "busy"
        try:
            state: dict[str, str] = self.redis.hgetall(key)  # type: ignore[assignment]
            if state.get("final"):
                return "final"
            if update.seq <= int(state.get("seq") or 0):
                return "stale"
            if float(state.get("hold_until") or 0) > time.time():
                return "rate-limited"
            provider_id = state.get("id")
            try:
                if provider_id:
                    edit(provider_id)
                else:
                    provider_id = post()
            except PartialBackoff as exc:
                self.redis.hset(key, "hold_until", repr(time.time() + exc.seconds))
                self.redis.expire(key, self.ttl)
                return "rate-limited"
            except Exception as exc:  # best effort: the next partial or the final reply follows
                log.info("%s: partial %d of %s not shown: %s", self.channel, update.seq, update.message_id, exc)
                return "failed"
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(key, mapping={"seq": update.seq, "id": provider_id})
            pipe.expire(key, self.ttl)
            pipe.execute()
            return "shown"
        finally:
            self._release(keys=[lock], args=[token])

    def finalize(self, message_id: str, wait_seconds: float) -> str | None:
        """End partial updates for good; the provider message showing the partial reply, if any.

        Waits for a partial update in flight (it may be posting the first provider message right
        now); raises PartialBusy if it takes longer than ``wait_seconds``.
        """
        key, lock, token = self.key(message_id), self.lock_key(message_id), uuid.uuid4().hex
        deadline = time.monotonic() + wait_seconds
        while not self.redis.set(lock, token, nx=True, px=self.lock_ms):
            if time.monotonic() > deadline:
                raise PartialBusy(f"a partial update of {message_id} is still being sent")
            time.sleep(0.05)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(key, "final", "1")
            pipe.expire(key, self.ttl)
            pipe.hget(key, "id")
            provider_id = pipe.execute()[-1]
            return str(provider_id) if provider_id else None
        finally:
            self._release(keys=[lock], args=[token])
