"""What observability adds to one message's path, measured in-process (no servers needed).

Per message the system now does, on its hot path (no Redis call added):
- edge: 2 counter increments (request, accepted) + 1 JSON log line ("accepted");
- core: 1 histogram observation per task + 1 per generation + 2 counter increments;
- io (delivery): 1 counter + 1 pending latency + 1 histogram per task.
(Celery's own per-task log lines were there before; they now carry the ids and are JSON.)
The flush thread does the Redis work: one pipeline per METRICS_FLUSH_INTERVAL per process
(two when latencies are pending), measured here against a real redis-server.

    .venv/bin/python bench/observability_overhead.py
"""

from __future__ import annotations

import io
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.keys import Keys
from telemetry.logs import ContextFilter, JsonFormatter, bound_message
from telemetry.metrics import Recorder
from tests.support.harness import RedisServer

N = 20_000


def per_call_us(call: Callable[[], object], n: int = N) -> float:
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            call()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    rec = Recorder()  # not configured: no thread, pure in-process cost
    inc = per_call_us(lambda: rec.inc("switchboard_messages_accepted_total", channel="api"))
    obs = per_call_us(lambda: rec.observe("switchboard_task_seconds", 0.123, task="core.handle_message",
                                          state="SUCCESS"))
    rec._batch.latencies.clear()
    lat = per_call_us(lambda: rec.observe_since_admission("switchboard_reply_latency_seconds", "m", channel="api"),
                      n=5_000)

    logger = logging.getLogger("bench.observability")
    logger.propagate = False
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    with bound_message("0123456789abcdef0123456789abcdef", "api:alice"):
        line = per_call_us(lambda: logger.info("task %s %s", "core.handle_message", "success",
                                               extra={"task": "core.handle_message", "state": "SUCCESS",
                                                      "duration_ms": 12.5}), n=5_000)

    per_message = 5 * inc + 3 * obs + lat + line  # edge + core + io, as listed in the docstring
    print(f"counter increment      {inc:6.2f} us")
    print(f"histogram observation  {obs:6.2f} us")
    print(f"pending latency        {lat:6.2f} us")
    print(f"JSON log line          {line:6.2f} us")
    print(f"per message (all processes together) ~{per_message:.0f} us")

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        try:
            client = server.client()
            flusher = Recorder()
            flusher.configure(lambda: client, Keys("bench"), 1.0)
            flushes = []
            for i in range(50):
                for channel in ("api", "telegram", "twilio_sms"):
                    for _ in range(20):
                        flusher.inc("switchboard_http_requests_total", channel=channel, status="202")
                        flusher.observe("switchboard_task_seconds", 0.05, task="core.handle_message",
                                        state="SUCCESS")
                    client.hset(Keys("bench").message(f"m{i}{channel}"), "created_at", repr(time.time() - 1))
                    flusher.observe_since_admission("switchboard_reply_latency_seconds", f"m{i}{channel}",
                                                    channel=channel)
                started = time.perf_counter()
                flusher.flush()
                flushes.append((time.perf_counter() - started) * 1000)
            flushes.sort()
            print(f"flush of a busy second (3 channels, 60 messages): p50 {flushes[len(flushes) // 2]:.2f} ms, "
                  f"max {flushes[-1]:.2f} ms (background thread, once per interval)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
