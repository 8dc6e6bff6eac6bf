"""A safety net: re-drive sessions whose waiting messages lost their task.

Every admitted message has a Celery task that retries until the message is
answered, so normally nothing waits unattended.  One gap remains: a retry
whose publish fails while Redis flaps, but whose acknowledgement gets
through.  Every ``SWEEP_INTERVAL`` the io workers look at the sessions with
messages waiting (a set kept by the admission and pop scripts) and send a
new task for any whose lease is free and whose head has not moved for
``SWEEP_AGE`` seconds.  A redundant task is harmless: it finds the message
done, or waits its turn.

Replies have the same gap: a delivery task lost with its io worker (kombu
pops a task, then records it as unacknowledged in a second round trip) would
leave its reply at the head of the session's outbox for good, and every
later reply of the session waiting behind it.  So the sweeper also re-sends
the delivery of an outbox head that nobody is posting (no claim) and no task
has attempted lately (no ``alive`` key, refreshed by every attempt), once its
record is ``SWEEP_AGE`` old.

One more gap is the broker connection itself: a worker waiting in BRPOP
when Redis froze (SIGSTOP, a partition) gives up on the connection, but the
frozen Redis still counts it as a blocked client.  A task pushed at the
moment Redis thaws (the core's finish script, sent before the freeze, runs
then) can be handed to that dead connection before Redis reads its close:
popped, never recorded as unacknowledged, lost.  It cost a conversation the
full backstop (118.9 s in one of five ``sigstop-30s`` runs).  So each time a
worker's broker connection is re-established (``after_reconnect``, from
celery_runtime/broker_recovery.py), the sweeper makes one recovery pass
``RECOVERY_GRACE`` seconds later, counting as stalled whatever has not moved
since the connection came back, instead of waiting ``SWEEP_AGE``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from redis_stores.messages import TERMINAL, MessageRecord, MessageStore
from tasks.keys import Keys

__all__ = ["RECOVERY_GRACE", "Sweeper"]

log = logging.getLogger(__name__)

RECOVERY_GRACE = 3.0  # seconds after a reconnect: the other workers have re-registered what they hold

class Sweeper(threading.Thread):
    def __init__(
        self, client: redis.Redis, keys: Keys, messages: MessageStore, kick: Callable[[str, str], None], *,
        interval: float, age: float, redeliver: Callable[[MessageRecord], None] = lambda _record: None,
    ) -> None:
        super().__init__(name="session-sweeper", daemon=True)
        self.redis, self.keys, self.messages, self.kick = client, keys, messages, kick
        self.redeliver = redeliver
        self.interval, self.age = interval, age
        self.stopped = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._recovery: float | None = None  # the reconnect moment a recovery pass is due for

    def after_reconnect(self, at: float | None = None) -> None:
        """A broker connection came back at ``at``: sweep what has not moved since, ``RECOVERY_GRACE`` later."""
        with self._lock:
            self._recovery = time.time() if at is None else at
        self._wake.set()

    def stop(self) -> None:
        self.stopped.set()
        self._wake.set()

    def _stalled(self, updated_at: float, now: float, cutoff: float | None) -> bool:
        return updated_at < cutoff if cutoff is not None else now - updated_at >= self.age

    def sweep_once(self, now: float | None = None, cutoff: float | None = None) -> list[str]:
        """Kick the stalled sessions (head untouched for ``SWEEP_AGE``, or since ``cutoff``); returns their ids."""
        now = time.time() if now is None else now
        kicked = []
        for session_id in self.redis.sscan_iter(self.keys.pending_sessions, count=500):
            sid = str(session_id)
            head = self.redis.lindex(self.keys.session_inbox(sid), 0)
            if head is None:
                self.redis.srem(self.keys.pending_sessions, sid)
                continue
            if self.redis.exists(self.keys.session_lock(sid)):
                continue
            record = self.messages.get(str(head))
            if record is not None and not self._stalled(record.updated_at, now, cutoff):
                continue
            log.warning("session %s stalled at %s: sending a new task", sid, head)
            self.kick(str(head), sid)
            kicked.append(sid)
        return kicked

    def sweep_outboxes(self, now: float | None = None, cutoff: float | None = None) -> list[str]:
        """Re-send the delivery of outbox heads whose task was lost (untouched for ``SWEEP_AGE``, or since
        ``cutoff``); returns their message ids."""
        now = time.time() if now is None else now
        resent = []
        for key in self.redis.scan_iter(match=self.keys.outbox_pattern, count=500):
            head = self.redis.lindex(str(key), 0)
            if head is None:
                continue
            mid = str(head)
            if self.redis.exists(self.keys.delivery_claim(mid), self.keys.delivery_alive(mid)):
                continue
            record = self.messages.get(mid)
            if record is None or record.status not in TERMINAL or not self._stalled(record.updated_at, now, cutoff):
                continue
            log.warning("outbox head %s has no live delivery task: sending it again", mid)
            self.redeliver(record)
            # Counts as an attempt: a head only queued behind a backlog is not re-sent at every pass.
            self.redis.set(self.keys.delivery_alive(mid), "1", ex=max(1, int(self.age)))
            resent.append(mid)
        return resent

    def run(self) -> None:
        regular = time.monotonic() + self.interval
        while not self.stopped.is_set():
            with self._lock:
                recovery = self._recovery
            due = regular if recovery is None else min(regular, time.monotonic() + max(
                0.0, recovery + RECOVERY_GRACE - time.time()))
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
            if self.stopped.is_set():
                return
            with self._lock:
                recovery = self._recovery
            try:
                if recovery is not None and time.time() >= recovery + RECOVERY_GRACE:
                    kicked, resent = self.sweep_once(cutoff=recovery), self.sweep_outboxes(cutoff=recovery)
                    with self._lock:
                        if self._recovery == recovery:
                            self._recovery = None
                    log.info("recovery sweep after a reconnect: %d session(s) kicked, %d reply(ies) sent again",
                             len(kicked), len(resent))
                if time.monotonic() >= regular:
                    regular = time.monotonic() + self.interval
                    self.sweep_once()
                    self.sweep_outboxes()
            except Exception:  # Redis gone again: the recovery pass stays due, the regular one waits its interval
                log.warning("sweep failed", exc_info=True)
                self.stopped.wait(1.0)
