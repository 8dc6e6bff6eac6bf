"""How full Redis is, so admission can say 503 before Redis says OOM to everyone.

With ``maxmemory-policy noeviction`` a full Redis refuses every write: new
messages, but also the workers finishing the ones already accepted.  The
edge therefore stops admitting at ``REDIS_ADMIT_MAX_FILL`` of ``maxmemory``
(503 + Retry-After), which keeps the rest for the work in flight.  The
reading is ``INFO memory``, taken at most once per
``REDIS_FILL_CHECK_INTERVAL`` per process: admission stays one round trip.
A Redis without ``maxmemory`` has no fill to measure (and no bound: see
docs/operations.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from edge.errors import Unavailable
from edge.observability import note_refused

__all__ = ["Fill", "RedisFill", "StorageFull", "out_of_memory"]

log = logging.getLogger(__name__)


def out_of_memory(exc: BaseException) -> bool:
    """Redis refused a write under ``noeviction``: OutOfMemoryError, or the same error raised inside a script."""
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or (
        isinstance(exc, redis.exceptions.ResponseError) and "OOM command not allowed" in str(exc))


class StorageFull(Unavailable):
    """503: Redis is nearly full; nothing was admitted."""


@dataclass(frozen=True)
class Fill:
    used: int
    maximum: int  # 0: no maxmemory

    @property
    def ratio(self) -> float | None:
        return self.used / self.maximum if self.maximum else None


class RedisFill:
    def __init__(
        self, client: redis.Redis, *, max_fill: float, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client, self.max_fill, self.interval, self.clock = client, max_fill, interval, clock
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._fill = Fill(0, 0)

    def current(self) -> Fill:
        """The last reading, refreshed when older than the interval (one INFO for all threads)."""
        with self._lock:
            if self.clock() - self._read_at >= self.interval:
                try:
                    info = self.client.info("memory")
                except redis.exceptions.ResponseError as exc:  # INFO renamed away (some managed Redis services)
                    if self._read_at == -float("inf"):
                        log.warning("cannot read Redis' memory (%s): admission will not stop before it is full", exc)
                    info = {}
                self._fill = Fill(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))
                self._read_at = self.clock()
            return self._fill

    def check(self) -> None:
        """Raise StorageFull past ``max_fill`` of maxmemory."""
        ratio = self.current().ratio
        if ratio is not None and ratio >= self.max_fill:
            note_refused("redis_full")
            raise StorageFull(
                f"storage is nearly full ({ratio:.0%} of Redis maxmemory; REDIS_ADMIT_MAX_FILL is "
                f"{self.max_fill:.0%}): nothing was accepted, try again shortly"
            )
