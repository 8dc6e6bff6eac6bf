"""The claim that keeps a reply's send to one edge at a time: owned, renewed while the send runs, released by its
owner only.

The core retries a callback whose POST outlived ``DELIVERY_TIMEOUT``, so a slow provider sees the same reply
again while the first send is still running. A plain ``SET NX EX 60`` let that go wrong twice over: an SMTP
server answering each step in 9.5 s (under ``SMTP_TIMEOUT``) kept the send past the claim's 60 s, a retry
took the lapsed claim and mailed the reply again, and the first send's ``finally`` then deleted the second
one's claim. Now the claim holds a nonce, a timer renews it every third of its life while the send runs,
and only a compare-and-delete releases it. An edge that dies mid-send stops renewing: the claim lapses and
a retry sends again (at least once; the per-part records keep parts already sent from going twice).
"""

from __future__ import annotations

import logging
import threading
import uuid
from types import TracebackType

import redis

__all__ = ["SendClaim"]

log = logging.getLogger(__name__)

_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class SendClaim:
    """``with SendClaim(client, key, seconds) as held:`` — ``held`` is False when another send has the claim."""

    def __init__(self, client: redis.Redis, key: str, seconds: float) -> None:
        self.redis, self.key = client, key
        self.ms = max(1000, int(seconds * 1000))
        self.nonce = uuid.uuid4().hex
        self.held = False
        self.renewals = 0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> bool:
        self.held = bool(self.redis.set(self.key, self.nonce, nx=True, px=self.ms))
        if self.held:
            self._renewer = threading.Thread(target=self._keep, name=f"send-claim-{self.key[-12:]}", daemon=True)
            self._renewer.start()
        return self.held

    def _keep(self) -> None:
        while not self._stop.wait(self.ms / 3000):
            try:
                if not int(self.redis.eval(_RENEW, 1, self.key, self.nonce, self.ms)):
                    log.warning("send claim %s was lost while its send ran", self.key)
                    return
                self.renewals += 1
            except redis.RedisError as exc:  # try again at the next tick; the claim lives a while longer
                log.warning("renewing send claim %s failed: %s", self.key, exc)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(5)
        if self.held:
            try:
                self.redis.eval(_RELEASE, 1, self.key, self.nonce)
            except redis.RedisError as exc:  # it lapses by itself
                log.warning("releasing send claim %s failed: %s", self.key, exc)
