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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from tasks.keys import Keys
from tasks.messages import TERMINAL, MessageRecord, MessageStore

__all__ = ["Sweeper"]

log = logging.getLogger(__name__)


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

    def sweep_once(self, now: float | None = None) -> list[str]:
        """Kick the stalled sessions; returns their ids."""
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
            if record is not None and now - record.updated_at < self.age:
                continue
            log.warning("session %s stalled at %s: sending a new task", sid, head)
            self.kick(str(head), sid)
            kicked.append(sid)
        return kicked

    def sweep_outboxes(self, now: float | None = None) -> list[str]:
        """Re-send the delivery of outbox heads whose task was lost; returns their message ids."""
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
            if record is None or record.status not in TERMINAL or now - record.updated_at < self.age:
                continue
            log.warning("outbox head %s has no live delivery task: sending it again", mid)
            self.redeliver(record)
            # Counts as an attempt: a head only queued behind a backlog is not re-sent at every pass.
            self.redis.set(self.keys.delivery_alive(mid), "1", ex=max(1, int(self.age)))
            resent.append(mid)
        return resent

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.sweep_once()
                self.sweep_outboxes()
            except Exception:
                log.warning("sweep failed", exc_info=True)
