"""Pipeline overhead: POST /v1/messages -> signed callback received, against bare Celery and raw Redis.

``.venv/bin/python bench/pipeline.py [--quick]`` (about 2 min; --quick ~40 s).

The edge (gunicorn, the product's settings), a core worker as the Procfile
runs it (threads pool, ``LLM_PARALLEL`` task threads: 4 by default, sharing one
model process) and an io worker (``deliver``, threads) run with the zero-cost
echo backend, so every millisecond belongs to the pipeline.  N sender threads
(N = 1, 10, 100), each a distinct user per message, POST with a ``reply_url``
and wait for the signed callback before sending the next.  The baselines run
against the same Redis at the same N, all processes up at once, measured in
interleaved rounds so a slow spell of the machine hits every row alike:

* bare Celery no-op round trip: ``bench.baselines:bare_app`` (the product's
  broker settings), a ``--pool solo`` worker; the task LPUSHes a reply the
  sender BLPOPs;
* raw Redis: LPUSH a ping, a second process BRPOPs it and LPUSHes a pong the
  sender BRPOPs.

Target: pipeline p50 within 2x of the bare Celery round trip (at 1 sender).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from bench.common import (
    BIN,
    ECHO_BACKEND,
    Arrivals,
    Latency,
    Proc,
    Run,
    bench_env,
    markdown_table,
    model_file,
    ratio,
    redis_server,
    run_script,
    running_system,
)

CONCURRENCY = (1, 10, 100)
TARGET = 2.0


def run_threads(n_threads: int, total: int, one: Callable[[int], None], latency: Latency | None = None) -> None:
    """``total`` calls of ``one(i)`` over ``n_threads`` closed-loop threads (wall time added to ``latency``)."""
    started = time.perf_counter()
    counter = count()
    errors: list[BaseException] = []

    def loop() -> None:
        while not errors:
            i = next(counter)
            if i >= total:
                return
            try:
                one(i)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if latency is not None:
        latency.wall_seconds += time.perf_counter() - started
    if errors:
        raise errors[0]


class RedisPingPong:
    """LPUSH a ping naming this sender's reply list; another process BRPOPs it and LPUSHes a pong."""

    PING = "bench:ping"

    def __init__(self, url: str, env: dict[str, str], run: Run) -> None:
        self.url = url
        self.proc = Proc("pong", [sys.executable, "-m", "bench.baselines", "pong", url, self.PING], env, run.tmp)
        # No socket timeout: redis-py 8's default (5 s) would cut a blocking BRPOP short.
        self.client = redis.Redis.from_url(url, decode_responses=True, max_connections=256, socket_timeout=None)
        self.latency: dict[int, Latency] = {}

    def measure(self, n_threads: int, total: int, *, record: bool = True) -> None:
        latency = self.latency.setdefault(n_threads, Latency(f"Redis LPUSH/BRPOP ping-pong, {n_threads} senders"))

        def one(i: int) -> None:
            key = f"bench:pong:{threading.get_ident()}"
            started = time.perf_counter()
            self.client.lpush(self.PING, key)
            if self.client.brpop([key], timeout=30) is None:
                raise RuntimeError("the ping-pong process did not answer")
            if record:
                latency.add((time.perf_counter() - started) * 1000)

        run_threads(n_threads, total, one, latency if record else None)

    def close(self) -> None:
        self.client.lpush(self.PING, "stop")
        self.proc.stop()


class BareCelery:
    """send_task a no-op to a solo worker, BLPOP the reply it LPUSHes."""

    def __init__(self, env: dict[str, str], run: Run) -> None:
        from bench.baselines import BARE_QUEUE, make_bare_app
        from tasks.settings import load_settings

        argv = [str(BIN / "celery"), "-A", "bench.baselines:bare_app", "worker", "-Q", BARE_QUEUE, "--pool", "solo",
                "--hostname", "bench@%h", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
        self.proc = Proc("bare-celery", argv, env, run.tmp)
        settings = load_settings(env)
        self.app = make_bare_app(settings)
        self.app.conf.broker_pool_limit = 128  # 100 sender threads share the producer pool
        self.client = redis.Redis.from_url(settings.redis_url, max_connections=256, socket_timeout=None)
        self.queue = BARE_QUEUE
        self.latency: dict[int, Latency] = {}
        self.measure(1, 5, record=False, timeout=60)  # waits for the worker to be up

    def measure(self, n_threads: int, total: int, *, record: bool = True, timeout: float = 30) -> None:
        from bench.baselines import NOOP_TASK

        latency = self.latency.setdefault(n_threads, Latency(f"bare Celery no-op round trip, {n_threads} senders"))

        def one(i: int) -> None:
            key = f"bench:celery-reply:{threading.get_ident()}"
            started = time.perf_counter()
            self.app.send_task(NOOP_TASK, args=[key], queue=self.queue)
            if self.client.blpop([key], timeout=timeout) is None:
                raise RuntimeError(f"bare Celery task not answered:\n{self.proc.log()[-3000:]}")
            if record:
                latency.add((time.perf_counter() - started) * 1000)

        run_threads(n_threads, total, one, latency if record else None)

    def close(self) -> None:
        self.app.close()
        self.proc.stop()


class BareHttp:
    """One HTTP leg: a signed JSON POST on a new connection (as a delivery makes it) to the callback receiver."""

    def __init__(self, secret: str, url: str) -> None:
        self.secret, self.url = secret, url
        self.latency = Latency("bare HTTP POST, signed, new connection, 1 sender")
        self.sent = count()

    def measure(self, total: int, *, record: bool = True) -> None:
        from tasks.signing import sign_headers

        def one(i: int) -> None:
            webhook_id = f"bench-http-{next(self.sent)}"
            started = time.perf_counter()
            body = json.dumps({"type": "bench", "message_id": webhook_id, "text": "pong"}, separators=(",", ":"))
            response = requests.post(self.url, data=body.encode(), timeout=10,
                                     headers=sign_headers(self.secret, webhook_id, body))
            if response.status_code != 200:
                raise RuntimeError(f"the callback receiver answered {response.status_code}")
            if record:
                self.latency.add((time.perf_counter() - started) * 1000)

        run_threads(1, total, one, self.latency if record else None)


class Pipeline:
    """N senders through the product: POST (a new user per message), wait for the signed callback."""

    def __init__(self, base_url: str, callback_url: str, arrivals: Arrivals, run_id: str) -> None:
        self.base_url, self.callback_url, self.arrivals, self.run_id = base_url, callback_url, arrivals, run_id
        self.local = threading.local()
        self.sent = count()
        self.parts: dict[int, dict[str, Latency]] = {}

    def _session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            from tests.support.factories import AUTH

            self.local.session = requests.Session()
            self.local.session.headers.update(AUTH)  # the test edge's client key (API_KEYS)
        session: requests.Session = self.local.session
        return session

    def measure(self, n_threads: int, total: int, *, record: bool = True) -> None:
        parts = self.parts.setdefault(n_threads, {
            "total": Latency(f"pipeline POST -> callback received, {n_threads} senders"),
            "accepted": Latency(f"  of which POST -> 202, {n_threads} senders"),
            "to_reply": Latency(f"  POST -> reply created in core (ms clock), {n_threads} senders"),
            "to_callback": Latency(f"  reply created -> callback received, {n_threads} senders"),
        })

        def one(i: int) -> None:
            n = next(self.sent)
            body = {"user": f"bench-{self.run_id}-{n}", "text": f"ping {n}", "reply_url": self.callback_url}
            sent_at = time.time()
            started = time.perf_counter()
            response = self._session().post(f"{self.base_url}/v1/messages", json=body, timeout=30)
            accepted_ms = (time.perf_counter() - started) * 1000
            if response.status_code != 202:
                raise RuntimeError(f"POST answered {response.status_code}: {response.text[:300]}")
            callback = self.arrivals.wait_for(response.json()["message_id"], 60)
            if record:
                created = dt.datetime.fromisoformat(callback.body["created_at"]).timestamp()
                parts["total"].add((callback.received_at - sent_at) * 1000)
                parts["accepted"].add(accepted_ms)
                parts["to_reply"].add((created - sent_at) * 1000)
                parts["to_callback"].add((callback.received_at - created) * 1000)

        run_threads(n_threads, total, one, parts["total"] if record else None)


def plan(quick: bool) -> dict[int, dict[str, int]]:
    """Samples per concurrency: the pipeline is the slowest, raw Redis the fastest."""
    full = {1: {"pipeline": 300, "celery": 600, "redis": 2000},
            10: {"pipeline": 1000, "celery": 2000, "redis": 5000},
            100: {"pipeline": 2000, "celery": 3000, "redis": 10000}}
    if quick:
        return {n: {k: max(v // 6, 30) for k, v in row.items()} for n, row in full.items()}
    return full


def run_bench(run: Run) -> dict[str, Any]:
    from tasks.settings import load_settings
    from tasks.signing import new_secret
    from tests.support.harness import CallbackReceiver

    rounds = 2 if run.quick else 3
    secret = new_secret()
    with redis_server(run.tmp) as server:
        env = bench_env(server.url, secret, model_file("tiny", run.tmp), LLM_BACKEND=ECHO_BACKEND)
        receiver = CallbackReceiver(secret)
        arrivals = Arrivals()
        receiver.received = arrivals
        pingpong = RedisPingPong(server.url, env, run)
        bare = BareCelery(env, run)
        http = BareHttp(secret, receiver.url)
        try:
            with running_system(env, run.tmp) as system:
                system.start_all(io_concurrency=8)
                pipe = Pipeline(system.base_url, receiver.url, arrivals, run.run_id)
                # Warm-up: connections, the first request of each gunicorn worker and thread, producer pools.
                pingpong.measure(10, 500, record=False)
                bare.measure(10, 200, record=False)
                pipe.measure(10, 200, record=False)
                http.measure(20, record=False)
                for n, sizes in plan(run.quick).items():
                    print(f"  {n} sender(s) ...", flush=True)
                    for r in range(rounds):
                        pingpong.measure(n, _share(sizes["redis"], rounds, r))
                        bare.measure(n, _share(sizes["celery"], rounds, r))
                        pipe.measure(n, _share(sizes["pipeline"], rounds, r))
                        if n == 1:
                            http.measure(_share(sizes["pipeline"], rounds, r))
                    server.client().delete(*[k for k in server.client().keys("bench:*")] or ["-"])
        finally:
            pingpong.close()
            bare.close()
            receiver.close()
    rows = []
    for n in CONCURRENCY:
        rows.append({
            "senders": n,
            "redis": pingpong.latency[n].summary(), "celery": bare.latency[n].summary(),
            **{k: v.summary() for k, v in pipe.parts[n].items()},
        })
    return {"rows": rows, "bare_http": http.latency.summary(), "target_ratio": TARGET,
            "core_parallel": load_settings(env).parallel_conversations}


def _share(total: int, rounds: int, r: int) -> int:
    return total // rounds + (1 if r < total % rounds else 0)


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    lat_rows: list[Sequence[Any]] = []
    for row in results["rows"]:
        for key in ("redis", "celery", "total", "accepted", "to_reply", "to_callback"):
            s = row[key]
            lat_rows.append([s["name"], s["n"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["mean_ms"], s["per_s"]])
        if row["senders"] == 1:
            h = results["bare_http"]
            lat_rows.append([h["name"], h["n"], h["p50_ms"], h["p90_ms"], h["p99_ms"], h["mean_ms"], h["per_s"]])
    ratio_rows = []
    for row in results["rows"]:
        pipe, celery, red = row["total"], row["celery"], row["redis"]
        p50 = ratio(pipe["p50_ms"], celery["p50_ms"])
        ratio_rows.append([row["senders"], p50, ratio(pipe["p99_ms"], celery["p99_ms"]),
                           ratio(celery["p50_ms"], red["p50_ms"]), p50 <= results["target_ratio"]])
    return [
        (f"Pipeline latency against bare Celery and raw Redis (ms), core worker at "
         f"LLM_PARALLEL={results['core_parallel']}",
         markdown_table(["measurement", "n", "p50", "p90", "p99", "mean", "per s"], lat_rows)),
        (f"Ratios (target: pipeline p50 <= {TARGET:g} x bare Celery p50)",
         markdown_table(["senders", "pipeline/Celery p50", "pipeline/Celery p99", "Celery/Redis p50",
                         f"p50 within {TARGET:g}x"], ratio_rows)),
        ("The floor of one message at 1 sender: 2 Celery hops (core, deliver) + 2 HTTP legs (POST in, callback out)",
         markdown_table(["ratio", "p50", "p99"], floor_rows(results))),
    ]


def floor_rows(results: dict[str, Any]) -> list[list[Any]]:
    one = next(r for r in results["rows"] if r["senders"] == 1)
    pipe, celery, http = one["total"], one["celery"], results["bare_http"]
    return [
        ["pipeline / (2 x bare Celery)", ratio(pipe["p50_ms"], 2 * celery["p50_ms"]),
         ratio(pipe["p99_ms"], 2 * celery["p99_ms"])],
        ["pipeline / (2 x bare Celery + 2 x bare HTTP)", ratio(pipe["p50_ms"], 2 * (celery["p50_ms"] + http["p50_ms"])),
         ratio(pipe["p99_ms"], 2 * (celery["p99_ms"] + http["p99_ms"]))],
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("pipeline", __doc__, argv, run_bench, tables)


if __name__ == "__main__":
    sys.exit(main())
