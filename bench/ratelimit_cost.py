"""What the rate limiter costs on the edge's hot path: ``POST /v1/messages`` with the limiter on vs. off.

Run ``.venv/bin/python bench/ratelimit_cost.py [--requests N]``. It starts its own redis-server and gunicorn
(one worker, as in the tests; no Celery workers: messages are only queued) twice, with the buckets on (limits
too high to trigger, so every request is counted) and off (empty settings), alternating rounds so drift hits
both alike, and reports per-request latency and the Redis commands each request cost (INFO commandstats); then
times one bucket check in process next to a bare Redis PING (the HTTP numbers are noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tasks.signing import new_secret  # noqa: E402
from tests.support.harness import RedisServer, System, system_env  # noqa: E402

HIGH = "100000000/minute"
ON = {"RATE_LIMIT_IP": HIGH, "RATE_LIMIT_USER": HIGH, "RATE_LIMIT_UPLOADS": HIGH, "RATE_LIMIT_SENDER": HIGH}
OFF = {"RATE_LIMIT_IP": "", "RATE_LIMIT_USER": "", "RATE_LIMIT_UPLOADS": "", "RATE_LIMIT_SENDER": ""}


def commands(server: RedisServer) -> tuple[int, int]:
    """Redis commands so far (those run inside Lua scripts included), and script calls (one round trip each)."""
    stats = server.client().info("commandstats")
    total = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
    scripts = sum(int(stats.get(k, {}).get("calls", 0)) for k in ("cmdstat_evalsha", "cmdstat_eval"))
    return total, scripts


def measure(system: System, server: RedisServer, n: int, label: str) -> dict[str, float]:
    session = requests.Session()
    for i in range(20):  # warm up the gunicorn worker and its connections
        session.post(f"{system.base_url}/v1/messages", json={"user": f"warm{i}", "text": "hi"}, timeout=10)
    before = commands(server)
    times: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        response = session.post(f"{system.base_url}/v1/messages", json={"user": f"{label}{i}", "text": "ping"},
                                timeout=10)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 202, response.text
    after = commands(server)
    per_request, scripts = (after[0] - before[0] - 1) / n, (after[1] - before[1]) / n
    times.sort()
    return {"p50_ms": statistics.median(times), "p90_ms": times[int(0.9 * n)], "mean_ms": statistics.fmean(times),
            "redis_commands_per_request": per_request, "lua_script_calls_per_request": scripts}


def direct(server: RedisServer, n: int = 3000) -> dict[str, float]:
    """One bucket check in process (the limiter's own cost, free of HTTP noise), next to a bare PING."""
    from flask import Flask

    from edge.ratelimit import RateLimits
    from redis_stores.redis_client import redis_client
    from tasks.settings import load_settings

    settings = load_settings({}, redis_url=server.url)
    client = redis_client(settings)
    limits = RateLimits(settings, client)
    limits.init_app(Flask("bench"))

    def timed(call: Any) -> float:
        samples = []
        for i in range(n):
            started = time.perf_counter()
            call(i)
            samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)

    timed(lambda i: limits.check("bench", HIGH, f"warm{i}", "x"))
    return {"bucket_check_p50_ms": round(timed(lambda i: limits.check("bench", HIGH, f"k{i}", "x")), 4),
            "redis_ping_p50_ms": round(timed(lambda i: client.ping()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        try:
            for round_ in range(args.rounds):
                for mode, env in (("on", ON), ("off", OFF)) if round_ % 2 == 0 else (("off", OFF), ("on", ON)):
                    server.client().flushall()
                    system = System(system_env(server.url, new_secret(), Path("unused.gguf"), **env), Path(tmp))
                    try:
                        system.start_edge()
                        results[mode].append(measure(system, server, args.requests, f"{mode}{round_}-"))
                    finally:
                        system.stop()
            in_process = direct(server)
        finally:
            server.stop()
    summary: dict[str, Any] = {}
    for mode, rounds in results.items():
        summary[mode] = {key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]}
    summary["http_p50_difference_ms"] = round(summary["on"]["p50_ms"] - summary["off"]["p50_ms"], 3)
    summary["in_process"] = in_process
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
