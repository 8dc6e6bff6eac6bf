"""Redis killed, frozen, and its queue lost under load: nothing accepted is lost, nothing answered twice.

Each scenario runs its own redis-server (AOF on, ``appendfsync everysec``,
as ``operator_tools/embedded_redis.py`` starts it) so it can be killed without
touching the session's shared one.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.support.fates import FateBook
from tests.support.harness import CallbackReceiver, RedisServer, System
from tests.support.traffic import (
    FAULT_BACKEND,
    Load,
    held_restored,
    report,
    restart_worker,
    settle,
    start_system,
    wait_all_answered,
    worker_pids,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MakeSystem = Callable[..., System]


def test_redis_killed_and_restarted_with_aof_loses_nothing_accepted(
    make_system: MakeSystem, callbacks: CallbackReceiver, own_redis: RedisServer
) -> None:
    system = start_system(make_system(redis_url=own_redis.url, LLM_BACKEND=FAULT_BACKEND,
                                      FAULT_BACKEND_SECONDS="0.05"))
    pids = worker_pids(system)
    book = FateBook()
    load = Load(system.base_url, book, callbacks.url, sessions=20, per_session=10, pause=0.05).start()
    load.wait_sent(60)
    own_redis.proc.kill()  # SIGKILL: no shutdown save; only the AOF brings the data back
    accepted_at_kill = load.sent
    time.sleep(5)
    accepted_while_down = load.sent - accepted_at_kill
    refused_while_down = dict(book.refused)
    own_redis.restart()
    restarted_at = time.time()
    load.join()
    wait_all_answered(book, [callbacks], 240, system.logs)
    recovery = max(c.received_at for c in callbacks.received) - restarted_at
    tally = settle(book, [callbacks], runs=own_redis.client())
    report(tally.line("redis-kill-restart-aof",
                      f"Redis down 5s: {refused_while_down.get('503', 0)} sends got 503, "
                      f"{refused_while_down.get('connection error', 0)} no answer, {accepted_while_down} got 2xx; "
                      f"{held_restored(system)} held tasks put back on reconnect; "
                      f"all answered {recovery:.1f}s after the restart"))
    assert tally.accepted == load.total and set(book.refused) <= {"503", "connection error"}
    assert refused_while_down.get("503", 0) > 0
    assert accepted_while_down <= 20  # only sends already past Redis when it died (one per sender at most)
    assert tally.exactly_once, (tally, system.logs())
    # Every process rode it out: a worker that lost Redis mid-BRPOP used to die on reconnect (kombu, issue 15).
    assert worker_pids(system) == pids, system.logs()


def test_redis_frozen_past_the_socket_timeout_is_recovered_from_without_restarts(
    make_system: MakeSystem, callbacks: CallbackReceiver, own_redis: RedisServer
) -> None:
    system = start_system(make_system(redis_url=own_redis.url, LLM_BACKEND=FAULT_BACKEND,
                                      FAULT_BACKEND_SECONDS="0.05"))
    pids = worker_pids(system)
    book = FateBook()
    load = Load(system.base_url, book, callbacks.url, sessions=20, per_session=10, pause=0.05).start()
    load.wait_sent(60)
    own_redis.proc.signal_group(signal.SIGSTOP)  # the socket stays open, nothing answers: a silent Redis
    frozen = 3 * float(system.env["REDIS_SOCKET_TIMEOUT"])
    time.sleep(frozen)
    own_redis.proc.signal_group(signal.SIGCONT)
    thawed_at = time.time()
    load.join()
    wait_all_answered(book, [callbacks], 240, system.logs)
    after = sorted(c.received_at for c in callbacks.received if c.received_at > thawed_at)
    tally = settle(book, [callbacks], runs=own_redis.client())
    report(tally.line("redis-sigstop", f"Redis frozen {frozen:.0f}s (socket timeout "
                      f"{system.env['REDIS_SOCKET_TIMEOUT']}s): first reply {after[0] - thawed_at:.1f}s and all "
                      f"{after[-1] - thawed_at:.1f}s after SIGCONT, no process restarted"))
    assert pids == worker_pids(system)
    assert tally.accepted == load.total and set(book.refused) <= {"503", "connection error"}
    assert tally.exactly_once, (tally, system.logs())


def test_messages_whose_tasks_were_lost_are_redriven_by_the_sweeper(
    make_system: MakeSystem, callbacks: CallbackReceiver, own_redis: RedisServer
) -> None:
    """The one hole Celery leaves (a retry whose publish failed while its ack got through, during a Redis
    flap) leaves messages in their inbox with no task.  Simulated here by deleting the queued tasks."""
    system = start_system(make_system(redis_url=own_redis.url, LLM_BACKEND=FAULT_BACKEND,
                                      SWEEP_INTERVAL="1", SWEEP_AGE="3"))
    system.procs["core"].stop()
    book = FateBook()
    load = Load(system.base_url, book, callbacks.url, sessions=10, per_session=10).start()
    load.join()
    client = own_redis.client()
    lost = client.llen("core")
    client.delete("core")  # every handle_message task gone; the inboxes still hold the messages
    dropped_at = time.time()
    restart_worker(system, "core")
    wait_all_answered(book, [callbacks], 180, system.logs)
    recovery = max(c.received_at for c in callbacks.received) - dropped_at
    tally = settle(book, [callbacks], runs=own_redis.client())
    report(tally.line("orphaned-inbox-sweeper", f"{lost} queued tasks deleted; all re-driven and answered "
                      f"{recovery:.1f}s later (SWEEP_INTERVAL 1s, SWEEP_AGE 3s)"))
    assert lost == load.total
    assert tally.accepted == load.total and tally.exactly_once, (tally, system.logs())
