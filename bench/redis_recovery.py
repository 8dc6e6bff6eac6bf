"""How long a Redis outage silences the system, with production timeouts: first and last answer after Redis is back.

Three outages, each while the fault suite's traffic flows (20 sessions x 10 messages through the edge, the
fault backend answering in 0.05 s, the fault injected once 60 messages were accepted):

- ``kill-aof``: redis-server SIGKILLed, restarted 5 s later from its AOF;
- ``shutdown``: a clean ``SHUTDOWN`` (AOF flushed), restarted 5 s later;
- ``sigstop-30s``: redis-server SIGSTOPped for 30 s (longer than every socket, connect and health-check
  timeout), then SIGCONT: connections stay open, nothing answers.

Measured from the restart (or SIGCONT): the first callback, and the moment every accepted message had its
answer.  Every reliability setting is the product's default (``VISIBILITY_TIMEOUT`` 3600 s, ``SWEEP_INTERVAL``
30 s, ``SWEEP_AGE`` 120 s, ``REDIS_SOCKET_TIMEOUT`` 5 s, ...): a recovery that waited for the sweeper backstop
or kombu's visibility timeout shows as 120 s or more.  Targets (issue 15): first answer <= 5 s, all <= 15 s.
The same processes serve all runs of one outage (a worker that survived one outage must survive the next).

    .venv/bin/python bench/redis_recovery.py [--runs 5] [--only kill-aof] [--quick] [--no-wait]
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench`, `tests` and the product importable
    sys.path.insert(0, str(ROOT))

from bench.common import Run, markdown_table, model_file, python_path, redis_server, running_system  # noqa: E402
from tasks.signing import new_secret  # noqa: E402
from tests.support.fates import FateBook  # noqa: E402
from tests.support.harness import CallbackReceiver, RedisServer, System, system_env, wait_until  # noqa: E402
from tests.support.traffic import FAULT_BACKEND, Load, settle, start_system  # noqa: E402

# The fault suite's short test timeouts, dropped so that the product's defaults (tasks/settings.py) apply.
TEST_TIMINGS = (
    "VISIBILITY_TIMEOUT", "TASK_SOFT_TIME_LIMIT", "TASK_TIME_LIMIT", "UNACKED_RESTORE_INTERVAL",
    "SESSION_LOCK_SECONDS", "SESSION_RETRY_SECONDS", "REDIS_SOCKET_TIMEOUT", "REDIS_CONNECT_TIMEOUT",
    "REDIS_HEALTH_CHECK_INTERVAL", "DELIVERY_BACKOFF_BASE", "DELIVERY_BACKOFF_MAX",
)
BUDGET = 240.0  # the fault suite's promise: past it a run counts as failed (and the sweeper had 2 passes)
DOWN = 5.0  # seconds Redis stays down in the kill and shutdown outages
FROZEN = 30.0  # seconds of SIGSTOP


def production_env(redis_url: str, secret: str, model: Path) -> dict[str, str]:
    env = system_env(redis_url, secret, model, LLM_BACKEND=FAULT_BACKEND, FAULT_BACKEND_SECONDS="0.05")
    for name in TEST_TIMINGS:
        env.pop(name)
    env["PYTHONPATH"] = python_path()
    return env


def kill_and_restart(redis: RedisServer) -> float:
    redis.proc.kill()
    time.sleep(DOWN)
    redis.restart()
    return time.time()


def shutdown_and_restart(redis: RedisServer) -> float:
    redis.client().shutdown()  # saves (AOF fsynced) and exits; redis-py swallows the closed connection
    assert redis.proc.popen is not None
    redis.proc.popen.wait(timeout=30)
    time.sleep(DOWN)
    redis.restart()
    return time.time()


def freeze_and_thaw(redis: RedisServer) -> float:
    redis.proc.signal_group(signal.SIGSTOP)
    time.sleep(FROZEN)
    redis.proc.signal_group(signal.SIGCONT)
    return time.time()


OUTAGES: dict[str, Callable[[RedisServer], float]] = {
    "kill-aof": kill_and_restart, "shutdown": shutdown_and_restart, "sigstop-30s": freeze_and_thaw,
}


@dataclass
class Figure:
    outage: str
    run: int
    first: float  # seconds from back-up to the first callback (NaN: none)
    last: float  # seconds from back-up to the last accepted message's first answer (NaN: not within BUDGET)
    answered: int
    accepted: int
    duplicates: int


def one_run(outage: str, n: int, system: System, redis: RedisServer, receiver: CallbackReceiver) -> Figure:
    book = FateBook()
    receiver.received.clear()
    load = Load(system.base_url, book, receiver.url, sessions=20, per_session=10, pause=0.05,
                prefix=f"r{n}-").start()
    load.wait_sent(60)
    back = OUTAGES[outage](redis)
    load.join()

    def answered_all() -> bool:
        got = {c.webhook_id for c in list(receiver.received)}
        return all(mid in got for mid in book.accepted_ids)

    with contextlib.suppress(TimeoutError):  # a run past the budget is reported as such, not raised
        wait_until(answered_all, BUDGET, "every accepted message answered", 0.1)
    first_at: dict[str, float] = {}
    for callback in list(receiver.received):
        first_at.setdefault(callback.webhook_id, callback.received_at)
    after = sorted(t for t in first_at.values() if t > back)
    accepted = book.accepted_ids
    done = [first_at[mid] for mid in accepted if mid in first_at]
    last = max(done) - back if len(done) == len(accepted) else float("nan")
    tally = settle(book, [receiver], quiet=1.0)
    figure = Figure(outage, n, after[0] - back if after else float("nan"), last, tally.answered, tally.accepted,
                    tally.duplicates)
    print(f"  {outage} run {n}: first answer {figure.first:.1f}s, all answered {figure.last:.1f}s after Redis was "
          f"back ({figure.answered}/{figure.accepted} answered, {figure.duplicates} duplicates)", flush=True)
    return figure


def summary(figures: list[Figure]) -> list[list[str]]:
    rows = []
    for outage in OUTAGES:
        mine = [f for f in figures if f.outage == outage]
        if not mine:
            continue
        row = [outage, str(len(mine))]
        for values in ([f.first for f in mine], [f.last for f in mine]):
            ok = [v for v in values if v == v]
            text = (f"{min(ok):.1f} / {statistics.median(ok):.1f} / {max(ok):.1f}" if ok else "-")
            row.append(text + (f" ({len(values) - len(ok)} over {BUDGET:.0f}s)" if len(ok) < len(values) else ""))
        row.append(f"{sum(f.answered for f in mine)}/{sum(f.accepted for f in mine)}")
        row.append(str(sum(f.duplicates for f in mine)))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per outage (default 5)")
    parser.add_argument("--only", choices=sorted(OUTAGES), action="append", help="just this outage (repeatable)")
    parser.add_argument("--quick", action="store_true", help="one run per outage")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for an idle machine first")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: still stop every process it started
    runs = 1 if args.quick else args.runs
    bench = Run("redis_recovery", args)
    secret = new_secret()
    model = model_file("tiny", bench.tmp)
    figures: list[Figure] = []
    receiver = CallbackReceiver(secret)
    try:
        for outage in args.only or list(OUTAGES):
            log_dir = bench.tmp / outage
            log_dir.mkdir()
            with redis_server(log_dir) as redis, running_system(production_env(redis.url, secret, model),
                                                                log_dir) as system:
                start_system(system)
                for n in range(1, runs + 1):
                    figures.append(one_run(outage, n, system, redis, receiver))
                redis.proc.signal_group(signal.SIGCONT)
    finally:
        receiver.close()
    header = ["outage", "runs", "first answer s (min / median / max)", "all answered s (min / median / max)",
              "answered", "duplicates"]
    table = markdown_table(header, summary(figures))
    bench.finish({"figures": [f.__dict__ for f in figures], "budget_s": BUDGET, "down_s": DOWN, "frozen_s": FROZEN},
                 [("Redis outages, production timeouts: seconds after Redis was back", table)])
    print(f"logs: {bench.tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
