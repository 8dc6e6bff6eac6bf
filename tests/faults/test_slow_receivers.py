"""Fault scenario ``slow-receiver`` (issue 17 item 4): one client's slow reply_url holds only its own slots.

A reply_url is the client's own server, and a slow one held a delivery thread for each reply posted to it:
a client sending replies to eight users at once, all to a receiver that answers in 5 s, held all 4 threads
of the io worker, and another client's reply waited 9.96 s behind them (this scenario with
``DELIVERY_CONCURRENCY_PER_CLIENT=0``; 0.14 s at most of 29 with 2 slots, in the same session).

Now a client's replies take at most ``DELIVERY_CONCURRENCY_PER_CLIENT`` delivery slots; the rest wait without
a thread. Another client's replies must each reach their receiver within ``PROMISE`` seconds of the POST, the
slow receiver must never see more than its slots at once, and every one of its replies must still arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.support.factories import OTHER_AUTH
from tests.support.harness import Callback, CallbackReceiver, System, wait_until
from tests.support.scripted_backend import SCRIPTED
from tests.support.traffic import report

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MakeSystem = Callable[..., System]
SLOTS = 2
THREADS = 4  # the io worker's
REPLIES = 8  # the slow client's, to as many users (one session each: the outbox does not serialize them)
DELAY = 5.0  # seconds the slow receiver takes to answer each callback
PROMISE = 5.0


@pytest.fixture
def slow_receiver(secret: str) -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver(secret, delay=DELAY)
    yield receiver
    receiver.close()


def arrived(receiver: CallbackReceiver, message_id: str) -> Callable[[], bool]:
    return lambda: bool(receiver.for_message(message_id))


def most_at_once(received: list[Callback], seconds: float) -> int:
    """The most callbacks the receiver was answering at one time (each takes ``seconds``)."""
    starts = sorted(c.received_at for c in received)
    return max((sum(1 for s in starts if s <= t < s + seconds - 0.2) for t in starts), default=0)


def test_a_slow_reply_url_holds_only_its_clients_slots(
    make_system: MakeSystem, callbacks: CallbackReceiver, slow_receiver: CallbackReceiver
) -> None:
    system = make_system(LLM_BACKEND=SCRIPTED, DELIVERY_CONCURRENCY_PER_CLIENT=str(SLOTS))
    system.start_all(io_concurrency=THREADS)
    slow: list[str] = []
    for n in range(REPLIES):
        accepted = requests.post(f"{system.base_url}/v1/messages", headers=OTHER_AUTH, timeout=15, json={
            "user": f"mallory{n}", "text": f"slow {n}", "reply_url": slow_receiver.url})
        assert accepted.status_code == 202, accepted.text
        slow.append(accepted.json()["message_id"])
    wait_until(lambda: len(slow_receiver.received) >= SLOTS, 30, "the slow receiver answering its first replies")

    latencies: list[float] = []
    n = 0
    while len(slow_receiver.received) < REPLIES or not latencies:
        started = time.monotonic()
        accepted = system.post(user="bob", text=f"hello {n}", reply_url=callbacks.url)
        assert accepted.status_code == 202, accepted.text
        message_id: str = accepted.json()["message_id"]
        wait_until(arrived(callbacks, message_id), 60, f"bob's answer {n}", 0.02)
        assert callbacks.for_message(message_id)[0].body["text"] == f"echo: hello {n}"
        latencies.append(time.monotonic() - started)
        n += 1
        time.sleep(0.5)
        assert n < 200, "the slow client's replies never all arrived"
    wait_until(lambda: all(slow_receiver.for_message(m) for m in slow), 60, "every slow reply delivered")

    at_once = most_at_once(slow_receiver.received, DELAY)
    report(f"faults: slow-receiver {REPLIES} replies to a reply_url answering in {DELAY:.0f}s, "
           f"{SLOTS} slots of {THREADS} threads: at most {at_once} posted at once; another client's "
           f"reply max {max(latencies):.2f}s of {len(latencies)}")
    assert max(latencies) < PROMISE, latencies
    assert at_once <= SLOTS
