"""Real traffic for the fault scenarios: senders through the edge, replies by id, run records, the report.

Each session has one sender thread that posts its messages one after the
other (so send order is admission order) with an ``Idempotency-Key`` per
message, the way a careful client does: a send that got a 503 or no answer
at all (edge or Redis down) is sent again with the same key until the edge
answers 2xx, so every logical message ends with exactly one id, and a
message whose first attempt was admitted before the connection died is
still tracked by that id.  Any other answer is recorded as a refusal the
scenario then fails on.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable

import redis
import requests

from tests.support.factories import AUTH
from tests.support.fates import FateBook, Run, Tally
from tests.support.fault_backend import RUNS_KEY
from tests.support.harness import CallbackReceiver, System, wait_until

__all__ = [
    "FAULT_BACKEND", "SUMMARY", "Load", "child_pids", "collect_replies", "held_restored", "report",
    "restart_worker", "runs_from_redis", "settle", "start_system", "wait_all_answered", "worker_pids",
]

SUMMARY: list[str] = []  # printed again in pytest's terminal summary (conftest), so CI logs show every line
RETRYABLE = frozenset({"503", "connection error"})


class Load:
    """``sessions`` senders, ``per_session`` messages each, texts ``"<session> #<n>"``."""

    def __init__(
        self, base_url: str, book: FateBook, reply_url: str | Callable[[str], str], *, sessions: int,
        per_session: int, pause: float = 0.0, prefix: str = "s", poison: Iterable[tuple[str, int]] = (),
        text_for: Callable[[str, int], str] | None = None,
    ) -> None:
        self.base_url, self.book, self.pause = base_url, book, pause
        self.reply_url = reply_url if callable(reply_url) else (lambda _s, url=reply_url: url)
        self.sessions = [f"{prefix}{i:02d}" for i in range(sessions)]
        self.per_session = per_session
        self.poison = set(poison)
        self.text_for = text_for
        self.sent = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(s,), daemon=True) for s in self.sessions]

    @property
    def total(self) -> int:
        return len(self.sessions) * self.per_session

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def wait_sent(self, count: int, timeout: float = 120) -> None:
        """Until ``count`` messages were accepted (a fault is injected mid-stream)."""
        wait_until(lambda: self.sent >= count, timeout, f"{count} messages accepted", 0.02)

    def join(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), f"senders still running after {timeout:.0f}s"

    def text(self, session: str, n: int) -> str:
        if self.text_for is not None:
            return self.text_for(session, n)
        return f"{session} #{n} POISON" if (session, n) in self.poison else f"{session} #{n}"

    def _run(self, session: str) -> None:
        for n in range(self.per_session):
            self._send(session, self.text(session, n))
            if self.pause:
                time.sleep(self.pause)

    def _send(self, session: str, text: str) -> None:
        key = uuid.uuid4().hex
        body = {"user": session, "text": text, "reply_url": self.reply_url(session)}
        for _ in range(600):
            try:
                response = requests.post(f"{self.base_url}/v1/messages", json=body,
                                         headers={**AUTH, "Idempotency-Key": key}, timeout=20)
            except requests.RequestException:
                self.book.refuse("connection error")
                time.sleep(0.2)
                continue
            if response.status_code in (200, 202):
                self.book.accept(session, response.json()["message_id"])
                with self._lock:
                    self.sent += 1
                return
            self.book.refuse(str(response.status_code))
            if str(response.status_code) not in RETRYABLE:
                return  # a wrong answer: recorded, the scenario fails on it
            time.sleep(0.2)
        self.book.refuse("gave up")


def collect_replies(book: FateBook, receiver: CallbackReceiver) -> FateBook:
    """Copy the receiver's callbacks into ``book`` (by webhook-id, in arrival order)."""
    for callback in list(receiver.received):
        book.reply(callback.webhook_id, str(callback.body.get("status", "answered")))
    return book


def wait_all_answered(book: FateBook, receivers: Iterable[CallbackReceiver], timeout: float, logs: Callable[[], str]
                      ) -> None:
    receivers = list(receivers)

    def done() -> bool:
        got = {c.webhook_id for r in receivers for c in list(r.received)}
        return all(mid in got for mid in book.accepted_ids)

    try:
        wait_until(done, timeout, "every accepted message to be answered", 0.2)
    except TimeoutError:
        got = {c.webhook_id for r in receivers for c in list(r.received)}
        missing = [mid for mid in book.accepted_ids if mid not in got]
        raise AssertionError(f"{len(missing)} accepted messages never answered, e.g. {missing[:5]}\n{logs()}") from None


def settle(book: FateBook, receivers: Iterable[CallbackReceiver], quiet: float = 3.0,
           runs: redis.Redis | None = None) -> Tally:
    """Wait ``quiet`` seconds for late duplicates, then count (with the fault backend's runs from ``runs``)."""
    time.sleep(quiet)
    for receiver in receivers:
        collect_replies(book, receiver)
    if runs is not None:
        book.add_runs(runs_from_redis(runs))
    return book.tally()


def runs_from_redis(client: redis.Redis, key: str = RUNS_KEY) -> list[Run]:
    """Pair the fault backend's start/end records into runs (per pid and text, in order)."""
    open_runs: dict[tuple[int, str], float] = {}
    runs: list[Run] = []
    for raw in client.lrange(key, 0, -1):
        entry = json.loads(raw)
        ident = (int(entry["pid"]), str(entry["text"]))
        session = str(entry["text"]).split(" #")[0]
        if entry["event"] == "start":
            if ident in open_runs:  # the same process began again without ending: the earlier run died
                runs.append(Run(session, ident[1], open_runs[ident], None))
            open_runs[ident] = float(entry["at"])
        elif ident in open_runs:
            runs.append(Run(session, ident[1], open_runs.pop(ident), float(entry["at"])))
    runs += [Run(str(text).split(" #")[0], text, start, None) for (_pid, text), start in open_runs.items()]
    return runs


def report(line: str) -> str:
    print(f"\n{line}")
    SUMMARY.append(line)
    return line


FAULT_BACKEND = "tests.support.fault_backend:factory"


def start_system(system: System, *, core_workers: int = 1, core_threads: int = 2, io_concurrency: int = 4
                 ) -> System:
    """The edge, ``core_workers`` core workers (``core``, ``core2``, ...) and the three io workers, started together."""
    system.start_edge()
    names = ["core"] + [f"core{i}" for i in range(2, core_workers + 1)]
    procs = [system.core_worker(name, core_threads) for name in names]
    procs += system.io_workers(io_concurrency)
    for proc in procs:
        system._wait_ready(proc)
    return system


def restart_worker(system: System, name: str) -> None:
    """Start a stopped worker again, same command; its log file is appended to, so count " ready." lines."""
    proc = system.procs[name]
    before = proc.log().count(" ready.")
    proc.start()
    wait_until(lambda: proc.log().count(" ready.") > before, 60, f"worker {name} to restart", 0.2)


HELD_RESTORED = re.compile(r"(\d+) task\(s\) held on the lost connection put back")


def held_restored(system: System) -> int:
    """Tasks the workers put back in their queues after reconnecting (``celery_runtime/broker_recovery.py`` logs)."""
    return sum(int(n) for proc in system.procs.values() for n in HELD_RESTORED.findall(proc.log()))


def worker_pids(system: System) -> dict[str, int | None]:
    """The pid of every process the system started, None for one that exited: equal before and after a fault
    means every process rode it out."""
    return {name: proc.popen.pid if proc.popen is not None and proc.popen.poll() is None else None
            for name, proc in system.procs.items()}


def child_pids(pid: int) -> list[int]:
    """The child processes of a worker (Linux /proc): an LLM worker's model process among them."""
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as handle:
            return [int(p) for p in handle.read().split()]
    except FileNotFoundError:
        return []
