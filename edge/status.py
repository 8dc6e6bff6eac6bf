"""One read of the whole system for ``GET /v1/status``, ``GET /metrics`` and the status page.

Two pipelined Redis round trips, whatever the number of workers: the first
reads the worker heartbeats, the fixed queues, the dead letters, the helper
names and the metric sums; the second the helper records and their queues.
Celery's ``control.ping`` is only asked for with ``?ping=1`` (it always waits
its whole timeout).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from edge.context import EdgeContext
from tasks.names import QUEUE_CONVERT, QUEUE_CORE, QUEUE_DELIVER, helper_queue
from telemetry.heartbeat import alive_per_queue, read_workers
from telemetry.metrics_render import Gauge, counter_sums, histogram_sums

__all__ = ["Snapshot", "gauges", "key_numbers", "snapshot", "status_body"]

FIXED_QUEUES = (QUEUE_CORE, QUEUE_DELIVER, QUEUE_CONVERT)
UNACKED_KEY = "unacked"  # kombu's Redis transport: tasks a worker has taken and not yet acknowledged
RECENT_DEAD_LETTERS = 10


@dataclass
class Snapshot:
    queues: dict[str, int]
    in_flight: int
    workers: list[dict[str, Any]]
    helpers: list[dict[str, Any]]
    dead_letters: int
    recent_dead_letters: list[dict[str, Any]]
    counters: dict[str, str]
    histograms: dict[str, str]
    taken_at: float
    redis_used_memory: int = 0
    redis_maxmemory: int = 0  # 0: Redis has no maxmemory


def snapshot(ctx: EdgeContext) -> Snapshot:
    keys, now = ctx.keys, time.time()
    pipe = ctx.redis.pipeline(transaction=False)
    for queue in FIXED_QUEUES:
        pipe.llen(queue)
    pipe.hlen(UNACKED_KEY)
    pipe.llen(keys.dead_letters)
    pipe.lrange(keys.dead_letters, 0, RECENT_DEAD_LETTERS - 1)
    pipe.smembers(keys.helpers)
    pipe.hgetall(keys.metrics_counters)
    pipe.hgetall(keys.metrics_histograms)
    *depths, unacked, dead_count, recent, helper_names, counters, histograms = pipe.execute()
    workers = read_workers(ctx.redis, keys, now=now, forget_after=ctx.settings.worker_forget_seconds)

    names = sorted(str(n) for n in helper_names)
    helpers: list[dict[str, Any]] = []
    queues = dict(zip(FIXED_QUEUES, (int(d) for d in depths), strict=True))
    if names:
        pipe = ctx.redis.pipeline(transaction=False)
        for name in names:
            pipe.llen(helper_queue(name))
        helper_depths = pipe.execute()
        records = {h.name: h for h in ctx.helpers.all()}
        for name, depth in zip(names, helper_depths, strict=True):
            queues[helper_queue(name)] = int(depth)
            record = records.get(name)
            if record is not None:
                helpers.append({**record.public(now), "queue": helper_queue(name), "queue_depth": int(depth)})
    fill = ctx.fill.current() if ctx.fill is not None else None
    return Snapshot(
        queues=queues, in_flight=int(unacked), workers=workers, helpers=helpers, dead_letters=int(dead_count),
        recent_dead_letters=[json.loads(item) for item in recent], counters=counters, histograms=histograms,
        taken_at=now, redis_used_memory=fill.used if fill else 0, redis_maxmemory=fill.maximum if fill else 0,
    )


def key_numbers(snap: Snapshot) -> dict[str, Any]:
    """The handful of totals the status page shows at a glance (all since the metrics began)."""
    counters = counter_sums(snap.counters)
    hists = histogram_sums(snap.histograms)

    def total(name: str, **match: str) -> float:
        return sum(v for (n, labels), v in counters.items()
                   if n == name and all(dict(labels).get(k) == want for k, want in match.items()))

    def hist_total(name: str) -> tuple[float, float]:
        parts = [h for (n, _), h in hists.items() if n == name]
        return sum(h.sum for h in parts), sum(h.count for h in parts)

    latency_sum, latency_count = hist_total("switchboard_reply_latency_seconds")
    generation_sum, generation_count = hist_total("switchboard_generation_seconds")
    tokens = total("switchboard_generated_tokens_total")
    return {
        "messages_accepted": int(total("switchboard_messages_accepted_total")),
        "replies_delivered": int(total("switchboard_replies_total", outcome="delivered")),
        "replies_dead": int(total("switchboard_replies_total", outcome="dead")),
        "mean_reply_latency_seconds": round(latency_sum / latency_count, 3) if latency_count else None,
        "generations": int(generation_count),
        "mean_tokens_per_second": round(tokens / generation_sum, 2) if generation_sum else None,
        "helper_errors": int(sum(h.count for (n, labels), h in hists.items()
                                 if n == "switchboard_helper_call_seconds" and dict(labels).get("outcome") == "error")),
    }


def status_body(ctx: EdgeContext, snap: Snapshot, *, ping: bool) -> dict[str, Any]:
    queues = sorted(snap.queues)
    body: dict[str, Any] = {
        "generated_at": snap.taken_at,
        "queues": snap.queues,
        "in_flight": snap.in_flight,
        "workers_alive": alive_per_queue(snap.workers, queues),
        "workers": snap.workers,
        "helpers": snap.helpers,
        "dead_letters": snap.dead_letters,
        "recent_dead_letters": snap.recent_dead_letters,
        "metrics": key_numbers(snap),
        "redis_memory": {"used": snap.redis_used_memory, "max": snap.redis_maxmemory},
    }
    if ping:
        try:
            replies = ctx.celery.control.ping(timeout=ctx.settings.status_ping_timeout) or []
            body["ping"] = sorted(name for reply in replies for name in reply)
        except Exception as exc:  # the broker is away: say so rather than fail the whole status
            body["ping"] = None
            body["ping_error"] = f"{type(exc).__name__}: {exc}"
    return body


def gauges(snap: Snapshot) -> list[Gauge]:
    """The scrape-time gauges of ``GET /metrics``."""
    queues = sorted(snap.queues)
    alive = alive_per_queue(snap.workers, queues)
    tokens_per_second = []
    for worker in snap.workers:
        for proc in [worker, *worker.get("processes", [])]:
            last = (proc.get("model") or {}).get("last_generation") or {}
            if proc.get("alive") and last.get("tokens_per_second") is not None:
                tokens_per_second.append(((proc["hostname"], str(proc["pid"])), float(last["tokens_per_second"])))
    circuit = {"closed": 0.0, "half-open": 0.5, "open": 1.0}
    return [
        Gauge("switchboard_queue_depth", "Tasks waiting in each queue.", ("queue",),
              tuple(((q,), float(snap.queues[q])) for q in queues)),
        Gauge("switchboard_tasks_in_flight", "Tasks taken by a worker and not yet acknowledged.", (),
              (((), float(snap.in_flight)),)),
        Gauge("switchboard_workers_alive", "Live workers (fresh heartbeat) consuming each queue.", ("queue",),
              tuple(((q,), float(n)) for q, n in sorted(alive.items()))),
        Gauge("switchboard_dead_letters", "Entries in the dead-letter list now.", (),
              (((), float(snap.dead_letters)),)),
        Gauge("switchboard_helper_circuit_open", "1 while a helper's circuit is open, 0.5 half-open, 0 closed.",
              ("helper",), tuple(((h["name"],), circuit.get(h["health"]["circuit"], 0.0)) for h in snap.helpers)),
        Gauge("switchboard_redis_used_memory_bytes", "Redis used_memory (INFO memory).", (),
              (((), float(snap.redis_used_memory)),)),
        Gauge("switchboard_redis_memory_fill_ratio", "Redis used_memory / maxmemory (0 without maxmemory); "
              "admission answers 503 from REDIS_ADMIT_MAX_FILL on: alert well before.", (),
              (((), snap.redis_used_memory / snap.redis_maxmemory if snap.redis_maxmemory else 0.0),)),
        Gauge("switchboard_worker_tokens_per_second", "Tokens per second of each worker process's last generation.",
              ("hostname", "pid"), tuple(tokens_per_second)),
    ]
