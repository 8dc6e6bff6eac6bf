"""Worker heartbeats: each worker process says every few seconds who it is and what it does.

A heartbeat is one JSON record in the Redis hash ``<prefix>:workers`` under
``<hostname>/<pid>``: hostname, pid, kind (``worker`` = the Celery main
process, ``pool`` = a prefork child), queues it consumes, pool and
concurrency, the model backend/file and whether it is loaded, the last
generation's tokens per second, ``started_at`` and ``ts``.  A clean
shutdown removes it; a killed process leaves it to go stale.

``GET /v1/status`` reads the whole hash in one round trip
(``read_workers``): a record older than three intervals is shown as not
alive (an operator sees which worker died), one older than
``WORKER_FORGET_SECONDS`` is dropped.  Works across hosts: all that is
shared is Redis.  Celery's ``control.ping`` stays available as a
cross-check (``?ping=1``), never on the default path: it waits its full
timeout for replies.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from tasks.keys import Keys

__all__ = ["STALE_AFTER_BEATS", "Heartbeat", "alive_per_queue", "read_workers"]

log = logging.getLogger(__name__)

STALE_AFTER_BEATS = 3


class Heartbeat(threading.Thread):
    """Writes ``describe()`` plus a timestamp every ``interval`` seconds until stopped."""

    def __init__(
        self, client: redis.Redis, keys: Keys, hostname: str, interval: float,
        describe: Callable[[], dict[str, Any]],
    ) -> None:
        super().__init__(name="worker-heartbeat", daemon=True)
        self.redis, self.keys, self.interval, self.describe = client, keys, interval, describe
        self.hostname = hostname or socket.gethostname()
        self.pid = os.getpid()
        self.started_at = time.time()
        self.stopped = threading.Event()

    @property
    def field(self) -> str:
        return f"{self.hostname}/{self.pid}"

    def beat_once(self) -> None:
        record = {"hostname": self.hostname, "pid": self.pid, "started_at": self.started_at,
                  "interval": self.interval, **self.describe(), "ts": time.time()}
        self.redis.hset(self.keys.workers, self.field, json.dumps(record))

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.beat_once()
            except Exception:  # Redis away: the next beat tries again
                log.debug("heartbeat failed", exc_info=True)
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        """Stop beating and remove the record (a clean shutdown is not a dead worker)."""
        self.stopped.set()
        try:
            self.redis.hdel(self.keys.workers, self.field)
        except redis.RedisError:
            log.debug("could not remove the heartbeat record", exc_info=True)


def read_workers(
    client: redis.Redis, keys: Keys, *, now: float | None = None, forget_after: float = 600.0
) -> list[dict[str, Any]]:
    """Every Celery worker (main process) with its pool processes nested, marked ``alive`` or not.

    One HGETALL; records not heard of for ``forget_after`` seconds are deleted."""
    now = time.time() if now is None else now
    raw: dict[str, str] = client.hgetall(keys.workers)  # type: ignore[assignment]
    records, forgotten = [], []
    for field, value in raw.items():
        try:
            record = json.loads(value)
        except ValueError:
            forgotten.append(field)
            continue
        age = now - float(record.get("ts", 0))
        if age > forget_after:
            forgotten.append(field)
            continue
        interval = float(record.get("interval") or 5.0)
        record["seconds_since_heartbeat"] = round(age, 1)
        record["alive"] = age <= interval * STALE_AFTER_BEATS
        records.append(record)
    if forgotten:
        client.hdel(keys.workers, *forgotten)
    workers = sorted((r for r in records if r.get("kind") != "pool"), key=lambda r: (r["hostname"], r["pid"]))
    by_host = {r["hostname"]: r for r in workers if r["alive"]}
    for child in sorted((r for r in records if r.get("kind") == "pool"), key=lambda r: r["pid"]):
        parent = by_host.get(child["hostname"]) or next(
            (w for w in workers if w["hostname"] == child["hostname"] and w["pid"] == child.get("parent_pid")), None)
        if parent is None:
            workers.append(child)  # an orphan pool process: show it on its own
        else:
            parent.setdefault("processes", []).append(child)
    return workers


def alive_per_queue(workers: list[dict[str, Any]], queues: list[str]) -> dict[str, int]:
    """How many live workers consume each queue (0 for a queue nobody serves: alert on it)."""
    counts = dict.fromkeys(queues, 0)
    for worker in workers:
        if worker.get("alive") and worker.get("kind") != "pool":
            for queue in worker.get("queues", ()):
                counts[queue] = counts.get(queue, 0) + 1
    return counts
