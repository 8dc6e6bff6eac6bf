"""Consuming helper queues that appear at run time.

Each helper has its own queue (``helper.<name>``), created when it
registers.  A thread in each io worker compares the registry with the
queues the worker consumes and adds the missing ones through the consumer's
own event loop (``call_soon``, as Celery's ``add_consumer`` control command
does), so a newly registered helper is served within ``HELPER_SYNC_INTERVAL``
and a restarted worker picks up every helper again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis_stores.helper_registry import HelperRegistry
from tasks.names import helper_queue

__all__ = ["HelperQueueSync"]

log = logging.getLogger(__name__)


class HelperQueueSync(threading.Thread):
    def __init__(self, consumer: Any, registry: HelperRegistry, interval: float) -> None:
        super().__init__(name="helper-queue-sync", daemon=True)
        self.consumer, self.registry, self.interval = consumer, registry, interval
        self.added: set[str] = set()
        self.stopped = threading.Event()

    def sync_once(self) -> list[str]:
        consumed = set(self.consumer.app.amqp.queues.consume_from)
        new = [q for q in (helper_queue(name) for name in self.registry.names()) if q not in consumed | self.added]
        for queue in new:
            self.consumer.call_soon(self.consumer.add_task_queue, queue)
            self.added.add(queue)
            log.info("consuming %s", queue)
        return new

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.sync_once()
            except Exception:  # Redis away: try again next tick
                log.warning("helper queue sync failed", exc_info=True)
