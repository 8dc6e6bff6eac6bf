"""System-wide metrics: counted in each process, summed in Redis, rendered by any edge.

Metrics are produced by many processes on many hosts (gunicorn workers,
Celery pool children).  Each process counts into a dict under a lock (a
microsecond or two, no I/O on the message path); a daemon thread flushes the
deltas every ``METRICS_FLUSH_INTERVAL`` in one pipelined round trip
(``HINCRBYFLOAT`` into two Redis hashes), and ``GET /metrics`` on any edge
renders the sums (``telemetry/metrics_render.py``).  Counters held in Redis
outlive process restarts, so they only ever grow; Prometheus copes with the
rare reset (a FLUSHALL) as usual.

A process forked after counting (Celery's prefork pool) starts from empty
buffers: the parent flushes its own counts, a child never re-sends them.
A process killed outright loses at most its last interval.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from tasks.keys import Keys

__all__ = [
    "SPECS",
    "Recorder",
    "Spec",
    "configure",
    "flush_now",
    "histogram_field",
    "inc",
    "observe",
    "observe_since_admission",
    "recorder",
    "series_field",
]

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
SHORT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_PENDING_LATENCIES = 10_000


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # "counter" | "histogram"
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("switchboard_http_requests_total", "counter", "HTTP requests the edge answered, by channel and status.",
         ("channel", "status")),
    Spec("switchboard_messages_accepted_total", "counter", "Messages admitted and queued, by channel.", ("channel",)),
    Spec("switchboard_replies_total", "counter", "Replies handed to their callback, by channel and outcome "
         "(delivered, dead).", ("channel", "outcome")),
    Spec("switchboard_reply_latency_seconds", "histogram", "Seconds from a message's admission to its reply "
         "being delivered (2xx from the callback), by channel.", ("channel",), LATENCY_BUCKETS),
    Spec("switchboard_generation_seconds", "histogram", "Seconds per model generation, by backend.", ("backend",),
         (*SHORT_BUCKETS, 60.0, 120.0)),
    Spec("switchboard_generated_tokens_total", "counter", "Completion tokens generated, by backend "
         "(rate / rate of switchboard_generation_seconds_sum = tokens per second).", ("backend",)),
    Spec("switchboard_prompt_tokens_total", "counter", "Prompt tokens read, by backend.", ("backend",)),
    Spec("switchboard_helper_call_seconds", "histogram", "Seconds per helper call attempt, by helper and outcome "
         "(ok, refused: the input cannot be done, error: the helper failed).", ("helper", "outcome"), SHORT_BUCKETS),
    Spec("switchboard_long_polls_refused_total", "counter", "Long polls answered 429 at once because their edge "
         "process held its share of waits, by bound (per_client: LONG_POLL_PER_CLIENT, total: LONG_POLL_SLOTS).",
         ("bound",)),
    Spec("switchboard_admissions_refused_total", "counter", "Messages and uploads refused before admission, by "
         "reason (redis_full: 503, Redis past REDIS_ADMIT_MAX_FILL of its maxmemory; quota_open_messages, "
         "quota_stored_bytes: 429, a caller past its quota).", ("reason",)),
    Spec("switchboard_mail_ignored_total", "counter", "Mail acknowledged and not answered, by reason "
         "(RFC 3834: auto_submitted, precedence, list, bounce, system_sender, report; ourselves: our own mail; "
         "sender_failed: its From failed SPF/DKIM/DMARC; sender_unverified: no verdict, EMAIL_UNVERIFIED=refuse).",
         ("reason",)),
    Spec("switchboard_thread_time_limits_total", "counter", "Time limits the threads-pool watchdog raised in a "
         "task's thread, by limit (soft: SoftTimeLimitExceeded at TASK_SOFT_TIME_LIMIT; hard: TimeLimitExceeded at "
         "TASK_TIME_LIMIT, which only a blocking call without its own bound can reach).", ("limit",)),
    Spec("switchboard_dead_letters_total", "counter", "Entries added to the dead-letter list, by kind.", ("kind",)),
    Spec("switchboard_task_seconds", "histogram", "Seconds per Celery task run, by task and state (SUCCESS, "
         "RETRY, FAILURE); task=\"convert.attachments\" is the media conversion.", ("task", "state"),
         (*SHORT_BUCKETS, 60.0, 120.0, 300.0)),
)}

Labels = tuple[tuple[str, str], ...]


def series_field(name: str, labels: Labels) -> str:
    """The Redis hash field of one counter series."""
    return json.dumps([name, [list(pair) for pair in labels]], separators=(",", ":"))


def histogram_field(name: str, labels: Labels, part: str) -> str:
    """The Redis hash field of one histogram bucket (``part`` = upper bound), ``sum`` or ``count``."""
    return json.dumps([name, [list(pair) for pair in labels], part], separators=(",", ":"))


def _labels(spec: Spec, given: dict[str, Any]) -> Labels:
    return tuple((name, str(given.get(name, ""))) for name in spec.labels)


@dataclass
class _Histogram:
    buckets: list[int]
    total: float = 0.0
    count: int = 0


@dataclass
class _Batch:
    counters: dict[tuple[str, Labels], float] = field(default_factory=dict)
    histograms: dict[tuple[str, Labels], _Histogram] = field(default_factory=dict)
    latencies: list[tuple[str, Labels, str, float]] = field(default_factory=list)  # name, labels, message id, at

    def empty(self) -> bool:
        return not (self.counters or self.histograms or self.latencies)


class Recorder:
    """Process-local aggregation plus the flush to Redis; thread-safe, fork-aware."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch = _Batch()
        self._pid = os.getpid()
        self._client_factory: Callable[[], redis.Redis] | None = None
        self._client: redis.Redis | None = None
        self._keys = Keys()
        self._interval = 1.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._forked()

    # -- set-up ------------------------------------------------------------------
    def configure(self, client_factory: Callable[[], redis.Redis], keys: Keys, interval: float) -> None:
        """Where and how often to flush; the thread starts with the first count of each process."""
        with self._lock:
            self._client_factory, self._keys, self._interval = client_factory, keys, interval
            self._client = None

    def _forked(self) -> None:
        """In a child after fork: drop the parent's unflushed counts and thread (the parent flushes them)."""
        self._pid = os.getpid()
        self._batch = _Batch()
        self._client = None
        self._thread = None
        self._stop = threading.Event()

    def _ensure_thread(self) -> None:
        if self._thread is None and self._client_factory is not None:
            self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
            self._thread.start()

    # -- recording (the hot path: a lock and a dict update) -------------------------
    def inc(self, name: str, value: float = 1.0, **labels: Any) -> None:
        spec = SPECS[name]
        key = (name, _labels(spec, labels))
        with self._lock:
            if self._pid != os.getpid():
                self._forked()
            self._batch.counters[key] = self._batch.counters.get(key, 0.0) + value
            self._ensure_thread()

    def observe(self, name: str, value: float, **labels: Any) -> None:
        spec = SPECS[name]
        key = (name, _labels(spec, labels))
        with self._lock:
            if self._pid != os.getpid():
                self._forked()
            self._add(self._batch, key, spec, value)
            self._ensure_thread()

    def observe_since_admission(self, name: str, message_id: str, at: float | None = None, **labels: Any) -> None:
        """Observe the seconds from ``message_id``'s admission to ``at``; the admission time is read at flush
        time, in the flush's own round trip, so the message path gains no Redis call."""
        spec = SPECS[name]
        with self._lock:
            if self._pid != os.getpid():
                self._forked()
            if len(self._batch.latencies) < MAX_PENDING_LATENCIES:
                self._batch.latencies.append((name, _labels(spec, labels), message_id, at or time.time()))
            self._ensure_thread()

    @staticmethod
    def _add(batch: _Batch, key: tuple[str, Labels], spec: Spec, value: float) -> None:
        hist = batch.histograms.get(key)
        if hist is None:
            hist = batch.histograms[key] = _Histogram([0] * len(spec.buckets))
        for i, bound in enumerate(spec.buckets):
            if value <= bound:
                hist.buckets[i] += 1
                break
        hist.total += value
        hist.count += 1

    # -- flushing --------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
            except Exception:  # Redis away: the counts were put back, the next tick tries again
                log.debug("metrics flush failed", exc_info=True)

    def client(self) -> redis.Redis | None:
        if self._client is None and self._client_factory is not None:
            self._client = self._client_factory()
        return self._client

    def flush(self, client: redis.Redis | None = None) -> bool:
        """Write the counts gathered since the last flush; on failure they are kept for the next one."""
        with self._lock:
            if self._pid != os.getpid():
                self._forked()
            batch, self._batch = self._batch, _Batch()
        if batch.empty():
            return True
        client = client or self.client()
        if client is None:
            self._merge_back(batch)
            return False
        try:
            self._write(client, batch)
        except Exception:
            self._merge_back(batch)
            raise
        return True

    def _write(self, client: redis.Redis, batch: _Batch) -> None:
        keys = self._keys
        if batch.latencies:
            pipe = client.pipeline(transaction=False)
            for _, _, message_id, _ in batch.latencies:
                pipe.hget(keys.message(message_id), "created_at")
            for (name, labels, _, at), created in zip(batch.latencies, pipe.execute(), strict=True):
                if created:
                    self._add(batch, (name, labels), SPECS[name], max(0.0, at - float(created)))
        pipe = client.pipeline(transaction=False)
        for (name, labels), value in batch.counters.items():
            pipe.hincrbyfloat(keys.metrics_counters, series_field(name, labels), value)
        for (name, labels), hist in batch.histograms.items():
            for bound, count in zip(SPECS[name].buckets, hist.buckets, strict=True):
                if count:
                    pipe.hincrby(keys.metrics_histograms, histogram_field(name, labels, repr(bound)), count)
            pipe.hincrbyfloat(keys.metrics_histograms, histogram_field(name, labels, "sum"), hist.total)
            pipe.hincrby(keys.metrics_histograms, histogram_field(name, labels, "count"), hist.count)
        pipe.execute()

    def _merge_back(self, batch: _Batch) -> None:
        with self._lock:
            for key, value in batch.counters.items():
                self._batch.counters[key] = self._batch.counters.get(key, 0.0) + value
            for key, hist in batch.histograms.items():
                mine = self._batch.histograms.get(key)
                if mine is None:
                    self._batch.histograms[key] = hist
                else:
                    mine.buckets = [a + b for a, b in zip(mine.buckets, hist.buckets, strict=True)]
                    mine.total += hist.total
                    mine.count += hist.count
            room = MAX_PENDING_LATENCIES - len(self._batch.latencies)
            self._batch.latencies.extend(batch.latencies[:max(0, room)])


_recorder = Recorder()


def recorder() -> Recorder:
    return _recorder


def configure(client_factory: Callable[[], redis.Redis], keys: Keys, interval: float) -> None:
    _recorder.configure(client_factory, keys, interval)


def inc(name: str, value: float = 1.0, **labels: Any) -> None:
    _recorder.inc(name, value, **labels)


def observe(name: str, value: float, **labels: Any) -> None:
    _recorder.observe(name, value, **labels)


def observe_since_admission(name: str, message_id: str, at: float | None = None, **labels: Any) -> None:
    _recorder.observe_since_admission(name, message_id, at, **labels)


def flush_now() -> None:
    """Flush before a process exits (worker shutdown); errors are logged, never raised."""
    try:
        _recorder.flush()
    except Exception:
        log.warning("final metrics flush failed", exc_info=True)
