"""A safety net: re-drive sessions whose waiting messages lost their task.

Every admitted message has a Celery task that retries until the message is
answered, so normally nothing waits unattended.  One gap remains: a retry
whose publish fails while Redis flaps, but whose acknowledgement gets
through.  Every ``SWEEP_INTERVAL`` the io workers look at the sessions with
messages waiting (a set kept by the admission and pop scripts) and send a
new task for any whose lease is free and whose head has not moved for
``SWEEP_AGE`` seconds.  A redundant task is harmless: it finds the message
done, or waits its turn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from tasks.keys import Keys
from tasks.messages import MessageStore

__all__ = ["Sweeper"]

log = logging.getLogger(__name__)


class Sweeper(threading.Thread):
    def __init__(
        self, client: redis.Redis, keys: Keys, messages: MessageStore, kick: Callable[[str, str], None], *,
        interval: float, age: float,
    ) -> None:
        super().__init__(name="session-sweeper", daemon=True)
        self.redis, self.keys, self.messages, self.kick = client, keys, messages, kick
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

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.sweep_once()
            except Exception:
                log.warning("sweep failed", exc_info=True)
