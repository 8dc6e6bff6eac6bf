"""The edge killed under load, the io worker killed mid-delivery, a callback target down short and long."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.fates import FateBook
from tests.support.harness import CallbackReceiver, RedisServer, System, wait_until
from tests.support.traffic import (
    FAULT_BACKEND,
    Load,
    report,
    restart_worker,
    settle,
    start_system,
    wait_all_answered,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MakeSystem = Callable[..., System]


@pytest.fixture
def second_receiver(secret: str) -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver(secret)
    yield receiver
    receiver.close()


def test_the_edge_killed_under_load_never_gave_a_2xx_for_a_dropped_message(
    make_system: MakeSystem, callbacks: CallbackReceiver, clean_redis: RedisServer
) -> None:
    system = start_system(make_system(LLM_BACKEND=FAULT_BACKEND, EDGE_WORKERS="2"))
    book = FateBook()
    load = Load(system.base_url, book, callbacks.url, sessions=20, per_session=10, pause=0.02).start()
    load.wait_sent(60)
    system.procs["edge"].kill()  # SIGKILL to gunicorn's arbiter and its workers, requests in flight
    killed_at = time.time()
    time.sleep(2)
    system.start_edge()
    back = time.time() - killed_at
    load.join()
    wait_all_answered(book, [callbacks], 180, system.logs)
    tally = settle(book, [callbacks], runs=clean_redis.client())
    report(tally.line("kill-edge", f"edge down {back:.1f}s: {book.refused.get('connection error', 0)} connection "
                      f"errors, {book.refused.get('503', 0)} 503s, 0 other answers"))
    assert set(book.refused) <= {"503", "connection error"} and book.refused["connection error"] > 0
    assert tally.accepted == load.total and tally.exactly_once, (tally, system.logs())


def test_the_io_worker_killed_mid_delivery_delivers_every_reply(
    make_system: MakeSystem, callbacks: CallbackReceiver, clean_redis: RedisServer
) -> None:
    callbacks.delay = 0.3  # a slow receiver: the kill lands while POSTs are in flight
    # A delivery task the kill loses (kombu pops a task before it records it as unacknowledged) is re-sent by
    # the sweeper: short sweep settings so that happens within the scenario.
    system = start_system(make_system(LLM_BACKEND=FAULT_BACKEND, SWEEP_INTERVAL="1", SWEEP_AGE="5"))
    book = FateBook()
    load = Load(system.base_url, book, callbacks.url, sessions=20, per_session=10).start()
    wait_until(lambda: len(callbacks.received) >= 40, 120, "40 replies")
    system.procs["io"].kill()
    killed_at = time.time()
    time.sleep(1)  # a POST sent just before the kill may still be recorded by the receiver now
    in_flight = {c.webhook_id for c in callbacks.received
                 if killed_at - callbacks.delay - 0.5 < c.received_at < killed_at + 1}
    restart_worker(system, "io")
    load.join()
    wait_all_answered(book, [callbacks], 180, system.logs)
    recovery = min(c.received_at for c in callbacks.received if c.received_at > killed_at) - killed_at
    tally = settle(book, [callbacks], runs=clean_redis.client())
    swept = system.procs["io"].log().count("has no live delivery task")
    report(tally.line("kill-io-worker", f"first delivery {recovery:.1f}s after SIGKILL; the sweeper re-sent {swept} "
                      f"outbox heads without a live task; {tally.duplicates} replies re-sent "
                      f"with the same webhook-id (their POSTs were in flight when the worker died; "
                      f"Standard Webhooks receivers drop them)"))
    assert tally.accepted == load.total and not tally.lost and tally.order_inversions == 0, (tally, system.logs())
    duplicated = {mid for mid in book.accepted_ids if book.replies_for(mid) > 1}
    assert duplicated <= in_flight, "only a reply whose POST was cut off by the kill may arrive twice"


def test_a_callback_target_down_is_delivered_once_when_back_and_dead_lettered_past_the_max_age(
    make_system: MakeSystem, callbacks: CallbackReceiver, second_receiver: CallbackReceiver,
    clean_redis: RedisServer,
) -> None:
    flaky, gone = callbacks, second_receiver
    flaky.status = gone.status = 503
    max_age = 15.0
    system = start_system(make_system(LLM_BACKEND=FAULT_BACKEND, DELIVERY_MAX_AGE=str(max_age),
                                      DELIVERY_BACKOFF_BASE="0.5", DELIVERY_BACKOFF_MAX="2"))
    book, doomed = FateBook(), FateBook()
    load = Load(system.base_url, book, flaky.url, sessions=10, per_session=10)
    lost_cause = Load(system.base_url, doomed, gone.url, sessions=2, per_session=10, prefix="g")
    load.start()
    lost_cause.start()
    load.join()
    lost_cause.join()
    time.sleep(8)  # down for a while, well inside the max age
    flaky.status = 200
    up_at = time.time()
    wait_all_answered(book, [flaky], 120, system.logs)
    recovery = max(c.received_at for c in flaky.received) - up_at
    tally = settle(book, [flaky], runs=clean_redis.client())

    client = clean_redis.client()

    def dead_ids() -> set[str]:
        return {json.loads(raw)["message_id"] for raw in client.lrange("sb:deadletter", 0, -1)
                if json.loads(raw)["kind"] == "delivery"}

    wait_until(lambda: set(doomed.accepted_ids) <= dead_ids(), 3 * max_age + 60, "the doomed replies' dead letters")
    delivery_states = {client.hget(f"sb:msg:{mid}", "delivery") for mid in doomed.accepted_ids}
    report(tally.line("callback-down-then-up", f"receiver down 8s, all delivered {recovery:.1f}s after it came "
                      f"back; {len(doomed.accepted_ids)}/{len(doomed.accepted_ids)} replies to a receiver down "
                      f"for good dead-lettered after DELIVERY_MAX_AGE {max_age:g}s"))
    assert tally.accepted == load.total and tally.exactly_once, (tally, system.logs())
    assert dead_ids() == set(doomed.accepted_ids) and delivery_states == {"dead"}
    assert not gone.received and not book.refused and not doomed.refused
