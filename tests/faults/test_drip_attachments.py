"""Fault scenario ``drip-attachments`` (issue 17 item 4): slow attachment servers stall only the conversions.

Before: eight messages whose attachments dripped 1 byte every 10 s held all 8 threads of the io worker for
more than 4 minutes (past ``TASK_TIME_LIMIT``: the threads pool ignores it, and downloads had only a per-read
timeout); meanwhile another user's reply sat in ``deliver`` and their calculator call timed out.

Now deliveries, conversions and helper calls run in three workers (the Procfile's bulkheads), a fetch has a
total deadline and a minimum rate, and the threads pool raises its time limits itself. One attacker keeps
eight dripping attachments in flight, replacing each as it ends, for the whole scenario, while another
person's plain messages and calculator calls must each be answered (the signed callback received) within
``PROMISE`` seconds. Every attacker message must end answered too (with a note that its file came too slowly).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.harness import CallbackReceiver, System, wait_until
from tests.support.helper_processes import CALCULATOR, TOKEN, Helpers
from tests.support.scripted_backend import SCRIPTED
from tests.support.traffic import report

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MakeSystem = Callable[..., System]
DRIPS = 8  # the attacker's attachments in flight at once: as many as the convert worker's threads
DRIP_SECONDS = 10.0  # one byte every this many seconds
ATTACK_SECONDS = 40.0
PROMISE = 10.0


class DripServer:
    """Answers every GET with headers at once, then one byte every ``DRIP_SECONDS`` until the client leaves."""

    def __init__(self) -> None:
        self.open = 0  # requests being served (a closed one is noticed at its next byte)
        self.most_open = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    server.open += 1
                    server.most_open = max(server.most_open, server.open)
                try:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
                    self.wfile.flush()
                    while not server.stop.wait(DRIP_SECONDS):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                except OSError:
                    pass  # the fetcher gave up and closed: what it should do
                finally:
                    with server.lock:
                        server.open -= 1

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer()
    yield server
    server.close()


def answered_within(system: System, callbacks: CallbackReceiver, text: str, timeout: float) -> tuple[str, float]:
    """Send ``text`` as bob; (the reply's text, seconds from the POST to the signed callback)."""
    started = time.monotonic()
    response = system.post(user="bob", text=text, reply_url=callbacks.url)
    assert response.status_code == 202, response.text
    message_id = response.json()["message_id"]
    wait_until(lambda: bool(callbacks.for_message(message_id)), timeout, f"bob's answer to {text!r}", 0.02)
    return str(callbacks.for_message(message_id)[0].body["text"]), time.monotonic() - started


def test_dripping_attachments_leave_replies_and_helper_calls_to_everyone_else(
    make_system: MakeSystem, callbacks: CallbackReceiver, drip: DripServer
) -> None:
    system = make_system(LLM_BACKEND=SCRIPTED, HELPER_REGISTRATION_TOKEN=TOKEN)
    system.start_all(io_concurrency=DRIPS)
    helpers = Helpers(system)
    try:
        helpers.start("calculator", CALCULATOR)
        attack: list[str] = []

        def attacker(slot: int) -> None:
            """One of the eight: a message with a dripping attachment, and the next as soon as it ends."""
            end = time.monotonic() + ATTACK_SECONDS
            n = 0
            while time.monotonic() < end:
                accepted = system.post(user=f"mallory{slot}", text="what does my file say?", attachments=[
                    {"url": f"{drip.url}/slot{slot}-{n}.txt", "mime": "text/plain"}])
                assert accepted.status_code == 202, accepted.text
                attack.append(accepted.json()["message_id"])
                while system.status(accepted.json()["message_id"])["status"] not in ("answered", "failed") \
                        and time.monotonic() < end + 120:
                    time.sleep(0.5)  # short polls: long ones would meet LONG_POLL_PER_CLIENT, not the drip
                n += 1

        attackers = [threading.Thread(target=attacker, args=(slot,), daemon=True) for slot in range(DRIPS)]
        for thread in attackers:
            thread.start()
        wait_until(lambda: drip.open >= DRIPS, 30, "every convert thread held by a dripping server")

        latencies: dict[str, list[float]] = {"reply": [], "helper call": []}
        n = 0
        while any(thread.is_alive() for thread in attackers):
            text, seconds = answered_within(system, callbacks, f"hello {n}", 60)
            assert text == f"echo: hello {n}"
            latencies["reply"].append(seconds)
            text, seconds = answered_within(system, callbacks, f"/calculate 6 * {n}", 60)
            assert text == f"6 * {n} = {6 * n}", text
            latencies["helper call"].append(seconds)
            n += 1
            time.sleep(2)  # under RATE_LIMIT_HELPER_CALLS (30/minute) for bob
        for thread in attackers:
            thread.join(60)

        ended = [system.status(message_id) for message_id in attack]
        slowest = {kind: max(values) for kind, values in latencies.items()}
        report(f"faults: drip-attachments {DRIPS} attachments dripping 1 byte/{DRIP_SECONDS:.0f}s kept in flight "
               f"for {ATTACK_SECONDS:.0f}s ({len(attack)} messages, at most {drip.most_open} drips served at once); "
               f"another user's " + ", ".join(
                   f"{kind} max {seconds:.1f}s of {len(latencies[kind])}" for kind, seconds in slowest.items()))
        assert all(seconds < PROMISE for seconds in slowest.values()), latencies
        assert all(record["status"] == "answered" for record in ended), [r["status"] for r in ended]
        assert all("too slowly" in record["reply"]["text"] for record in ended), ended[0]["reply"]
        assert "are raised by this worker's watchdog" in system.procs["convert"].log()  # the threads pool's limits
    finally:
        helpers.stop()
