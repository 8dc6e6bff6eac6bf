"""Bounds on long polls, so that waiting clients cannot take every request thread.

A ``GET /v1/messages/<id>?wait=S`` that has to wait holds one gunicorn thread
(and one Redis connection, for its subscription) for up to S seconds.  Without
a bound, 32 such polls from one client held all 2 x 16 threads and every other
request (other people's messages, ``/healthz``) queued behind them.

Each edge process therefore lends waits only part of its threads:

    LONG_POLL_SLOTS       waits one process holds at once, all clients together (< EDGE_THREADS)
    LONG_POLL_PER_CLIENT  waits one client holds at once in one process

A wait past either bound is answered at once with 429 and ``Retry-After``; the
client polls again a second later, and nothing it asked about is lost.  A poll
whose answer is already there never takes a slot.  The counts live in the
process, not in Redis: they cost no round trip, a crashed process cannot leak
them, and the per-client table never holds more entries than there are slots.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from edge.errors import TooManyRequests
from telemetry import metrics

__all__ = ["WaitSlots"]

RETRY_AFTER_SECONDS = 1


class WaitSlots:
    """Counts the long polls this process holds, in total and per client."""

    def __init__(self, total: int, per_client: int) -> None:
        if total < 0 or per_client < 0:
            raise ValueError("wait slots cannot be negative")
        self.total, self.per_client = total, per_client
        self._lock = threading.Lock()
        self._held = 0
        self._by_client: dict[str, int] = {}

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """One slot for ``client`` while the block runs; ``TooManyRequests`` when none is free."""
        with self._lock:
            mine = self._by_client.get(client, 0)
            if mine >= self.per_client:
                metrics.inc("switchboard_long_polls_refused_total", bound="per_client")
                raise TooManyRequests(
                    f"this client already has {mine} long polls waiting (LONG_POLL_PER_CLIENT={self.per_client}); "
                    f"poll again in {RETRY_AFTER_SECONDS} s or wait on fewer messages at once",
                    RETRY_AFTER_SECONDS,
                )
            if self._held >= self.total:
                metrics.inc("switchboard_long_polls_refused_total", bound="total")
                raise TooManyRequests(
                    f"the edge is holding its {self.total} long polls already (LONG_POLL_SLOTS); "
                    f"poll again in {RETRY_AFTER_SECONDS} s",
                    RETRY_AFTER_SECONDS,
                )
            self._held += 1
            self._by_client[client] = mine + 1
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
                left = self._by_client[client] - 1
                if left:
                    self._by_client[client] = left
                else:
                    del self._by_client[client]

    def waiting(self) -> int:
        """Long polls held right now (the ``switchboard_edge_long_polls_waiting`` gauge)."""
        with self._lock:
            return self._held

    def clients(self) -> int:
        """Clients with a wait held right now: never more than ``total``."""
        with self._lock:
            return len(self._by_client)
