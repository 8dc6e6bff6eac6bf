"""Core workers killed, stopped and crashed under load: every accepted message answered once, in order.

Real processes throughout (tests/support/harness.py): gunicorn, Celery
threads-pool core workers whose model process runs the fault backend (a
real-time echo that records its runs), a threaded io worker posting signed
callbacks to a receiver.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import pytest

from tasks.celery_factory import create_celery
from tasks.names import HANDLE_MESSAGE
from tasks.settings import load_settings
from tests.support.fates import FateBook, overlapping_runs
from tests.support.harness import CallbackReceiver, RedisServer, System, wait_until
from tests.support.traffic import (
    FAULT_BACKEND,
    Load,
    child_pids,
    report,
    restart_worker,
    runs_from_redis,
    settle,
    start_system,
    wait_all_answered,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MakeSystem = Callable[..., System]


def running(redis_server: RedisServer, workers: list[int], fresh: float, timeout: float = 60, last: str = "",
            at_least: int = 1) -> list[tuple[int, str]]:
    """(pid, text) of the generations in children of the ``workers`` processes (their model processes, which
    they start as they become ready) whose text ends with ``last`` and that started less than ``fresh`` seconds
    ago, so they are still running when the caller strikes: once there are ``at_least`` of them at once."""
    found: list[tuple[int, str]] = []

    def look() -> bool:
        pids = {pid for worker in workers for pid in child_pids(worker)}
        entries = [json.loads(raw) for raw in redis_server.client().lrange("faults:runs", 0, -1)]
        ended = {(e["pid"], e["text"]) for e in entries if e["event"] == "end"}
        found[:] = [(e["pid"], e["text"]) for e in entries
                    if e["event"] == "start" and e["pid"] in pids and (e["pid"], e["text"]) not in ended
                    and e["text"].endswith(last) and e["at"] > time.time() - fresh]
        return len(found) >= at_least

    wait_until(look, timeout, f"{at_least} generation(s) in progress", 0.01)
    return list(found)


def generating(redis_server: RedisServer, workers: list[int], fresh: float, timeout: float = 60, last: str = ""
               ) -> tuple[int, str]:
    """The newest of ``running``'s generations."""
    return running(redis_server, workers, fresh, timeout, last)[-1]


def message_of(book: FateBook, text: str) -> str:
    session, n = text.split(" #")
    wait_until(lambda: len(book.accepted[session]) > int(n.split()[0]), 30, f"{text} to be accepted")
    return book.accepted[session][int(n.split()[0])]


def answered_at(callbacks: CallbackReceiver, message_id: str) -> float:
    wait_until(lambda: bool(callbacks.for_message(message_id)), 120, f"the reply to {message_id}")
    return callbacks.for_message(message_id)[0].received_at


# "group-sweeper": a production-like visibility timeout (600 s) with a short sweep: the dead worker's session is
# recovered by the io workers' sweeper instead, so recovery does not hang on VISIBILITY_TIMEOUT.
TARGETS = {"child": {}, "group": {}, "group-sweeper": {"VISIBILITY_TIMEOUT": "600", "SWEEP_INTERVAL": "1",
                                                       "SWEEP_AGE": "4"}}


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_core_worker_killed_mid_generation_answers_every_message_once(
    make_system: MakeSystem, callbacks: CallbackReceiver, clean_redis: RedisServer, target: str
) -> None:
    system = start_system(make_system(LLM_BACKEND=FAULT_BACKEND, FAULT_BACKEND_SECONDS="0.1", **TARGETS[target]))
    book = FateBook()
    # Paced below what two processes answer, so the recovery figure is the requeue's, not a backlog's.
    load = Load(system.base_url, book, callbacks.url, sessions=20, per_session=10, pause=2.5).start()
    load.wait_sent(20)
    core = system.procs["core"]
    assert core.popen is not None
    # The whole worker is killed while it answers the *last* message of a session, so no later message of
    # that session can take over: only kombu's restore of the dead worker's unacked task brings it back.
    pid, text = generating(clean_redis, [core.popen.pid], 0.03,
                           last="" if target == "child" else "#9")
    killed_at = time.time()
    if target == "child":
        os.kill(pid, signal.SIGKILL)  # the model's process: the calls in flight fail and retry, the worker lives
    else:
        core.kill()  # the whole worker (parent and children): its tasks wait in `unacked`
        restart_worker(system, "core")
    killed_id = message_of(book, text)
    load.join()
    wait_all_answered(book, [callbacks], 180, system.logs)
    recovery = answered_at(callbacks, killed_id) - killed_at
    tally = settle(book, [callbacks], runs=clean_redis.client())
    rerun = min(run.start for run in book.runs if run.label == text and run.start > killed_at) - killed_at
    env = system.env
    report(tally.line(f"kill-core-worker-{target}", f"the message killed mid-generation ran again {rerun:.1f}s and "
                      f"was answered {recovery:.1f}s after SIGKILL (VISIBILITY_TIMEOUT {env['VISIBILITY_TIMEOUT']}s, "
                      f"SWEEP_INTERVAL + SWEEP_AGE {env.get('SWEEP_INTERVAL', '30')}+{env.get('SWEEP_AGE', '120')}s)"))
    assert tally.accepted == load.total and set(book.refused) == set()
    assert tally.exactly_once, (tally, system.logs())
    assert sum(1 for run in book.runs if run.label == text) >= 2  # it really was generated again


def test_the_model_process_killed_mid_batch_runs_each_conversation_of_the_batch_again_once(
    make_system: MakeSystem, callbacks: CallbackReceiver, clean_redis: RedisServer
) -> None:
    """Four conversations are generated at once in the one model process; SIGKILL to it fails all four calls,
    each task retries, and each of the four is generated exactly once more (alone: an attempt after a crash
    runs with nothing beside it) and answered exactly once."""
    system = start_system(make_system(LLM_BACKEND=FAULT_BACKEND, FAULT_BACKEND_SECONDS="1", LLM_PARALLEL="4"),
                          core_threads=4)
    book = FateBook()
    load = Load(system.base_url, book, callbacks.url, sessions=6, per_session=4, pause=0.3).start()
    core = system.procs["core"]
    assert core.popen is not None
    batch = running(clean_redis, [core.popen.pid], 0.6, at_least=3)
    pid = batch[0][0]
    assert {p for p, _ in batch} == {pid}  # one process holds the whole batch
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    load.join()
    wait_all_answered(book, [callbacks], 180, system.logs)
    tally = settle(book, [callbacks], runs=clean_redis.client())
    again = {text: sum(1 for run in book.runs if run.label == text and run.start > killed_at) for _, text in batch}
    report(tally.line("kill-model-process-mid-batch", f"{len(batch)} conversations in the killed batch, each run "
                      f"again {sorted(set(again.values()))} time(s) after the kill"))
    assert tally.accepted == load.total and not book.refused
    assert tally.exactly_once, (tally, system.logs())
    assert all(count == 1 for count in again.values()), again


def test_sigterm_to_every_worker_under_load_loses_and_repeats_nothing(
    make_system: MakeSystem, callbacks: CallbackReceiver, clean_redis: RedisServer
) -> None:
    system = start_system(make_system(LLM_BACKEND=FAULT_BACKEND, FAULT_BACKEND_SECONDS="0.1"))
    book = FateBook()
    load = Load(system.base_url, book, callbacks.url, sessions=20, per_session=10).start()
    load.wait_sent(50)
    stopped_at = time.time()
    workers = ("core", "io", "convert", "helpers")
    for name in workers:
        system.procs[name].stop(timeout=30)  # SIGTERM to the process group, as a supervisor stops a service
    exit_codes = {n: system.procs[n].popen.returncode for n in workers}  # type: ignore[union-attr]
    for name in workers:
        restart_worker(system, name)
    load.join()
    wait_all_answered(book, [callbacks], 180, system.logs)
    recovery = time.time() - stopped_at

    # Every task sent again after its message was answered (a redelivery): nothing more may reach anyone.
    before = len(callbacks.received)
    app = create_celery(load_settings(system.env))
    for session, ids in book.accepted.items():
        for message_id in ids:
            app.send_task(HANDLE_MESSAGE, args=[message_id, f"api:tests:{session}"])
    app.close()
    tally = settle(book, [callbacks], quiet=5, runs=clean_redis.client())
    late = len(callbacks.received) - before
    report(tally.line("sigterm-all-workers", f"exit codes after SIGTERM {exit_codes}, all answered {recovery:.1f}s "
                      f"after the stop; {tally.accepted} tasks re-sent after answering: {late} replies"))
    assert late == 0 and -signal.SIGKILL not in exit_codes.values()  # stopped warm, not killed after the wait
    assert tally.accepted == load.total and not book.refused
    assert tally.exactly_once, (tally, system.logs())


def test_a_poison_message_is_dead_lettered_after_max_attempts_while_other_sessions_flow(
    make_system: MakeSystem, callbacks: CallbackReceiver, clean_redis: RedisServer
) -> None:
    system = start_system(make_system(LLM_BACKEND=FAULT_BACKEND, FAULT_BACKEND_SECONDS="0.05", MAX_ATTEMPTS="3"))
    book = FateBook()
    load = Load(system.base_url, book, callbacks.url, sessions=10, per_session=15, poison=[("s03", 4)]).start()
    load.join()
    wait_all_answered(book, [callbacks], 180, system.logs)
    tally = settle(book, [callbacks], runs=clean_redis.client())
    poison_id = book.accepted["s03"][4]
    poison_reply = callbacks.for_message(poison_id)[0].body
    dead = [json.loads(raw) for raw in clean_redis.client().lrange("sb:deadletter", 0, -1)]
    runs = [r for r in runs_from_redis(clean_redis.client()) if r.label == "s03 #4 POISON"]
    report(tally.line("poison-message", f"poison run {len(runs)} times then failed "
                      f"({tally.statuses.get('failed', 0)} failed, {tally.statuses.get('answered', 0)} answered), "
                      f"dead-lettered: {dead[0]['reason'] if dead else 'no'}"))
    assert tally.exactly_once, (tally, system.logs())
    assert poison_reply["status"] == "failed" and tally.statuses == {"failed": 1, "answered": tally.accepted - 1}
    assert len(runs) == 3  # MAX_ATTEMPTS crashes, then no more
    assert [(d["kind"], d["message_id"]) for d in dead] == [("poison", poison_id)] and "attempts" in dead[0]["reason"]
    later = book.accepted["s03"][5:]
    assert all(callbacks.for_message(mid)[0].body["status"] == "answered" for mid in later)  # its session went on


def test_one_busy_session_over_two_core_workers_one_killed_keeps_order_and_never_overlaps(
    make_system: MakeSystem, callbacks: CallbackReceiver, clean_redis: RedisServer
) -> None:
    system = start_system(make_system(LLM_BACKEND=FAULT_BACKEND, FAULT_BACKEND_SECONDS="0.05"),
                          core_workers=2, core_threads=1)
    book = FateBook()
    load = Load(system.base_url, book, callbacks.url, sessions=1, per_session=100).start()
    load.wait_sent(25)
    workers = {system.procs[name].popen.pid: name for name in ("core", "core2")}  # type: ignore[union-attr]
    pid, text = generating(clean_redis, list(workers), 0.02)  # whichever worker holds the session right now
    victim = next(name for parent, name in workers.items() if pid in child_pids(parent))
    killed_at = time.time()
    system.procs[victim].kill()  # mid-generation, mid-stream; the other worker carries on alone
    load.join()
    wait_all_answered(book, [callbacks], 180, system.logs)
    last = max(c.received_at for c in callbacks.received)
    tally = settle(book, [callbacks], runs=clean_redis.client())
    again = sum(1 for run in book.runs if run.label == text)
    report(tally.line("one-session-100-kill-one-worker",
                      f"{tally.runs} runs ('{text}' killed mid-generation and run {again}x), "
                      f"last reply {last - killed_at:.1f}s after the kill"))
    assert again >= 2
    assert tally.accepted == 100 and not book.refused
    assert tally.exactly_once and tally.overlapping_runs == 0, (tally, system.logs())


def test_a_core_worker_frozen_past_its_lease_cannot_write_over_its_successor(
    make_system: MakeSystem, callbacks: CallbackReceiver, clean_redis: RedisServer
) -> None:
    """SIGSTOP (a long GC pause, a swapped-out VM) freezes a worker mid-generation for longer than its session
    lease: another worker takes the session over and answers; when the frozen one wakes up, its fenced
    writes are refused, so the reply is neither lost nor sent twice."""
    # A stalled worker keeps the session's waiting (countdown) tasks in its memory, where no other worker
    # sees them until the visibility timeout; the io workers' sweeper is what hands the session on sooner.
    # The freeze (9 s) must stay inside the task's time limits, or on waking the soft limit (8 s in the
    # integration settings) may end the task before it reaches a fenced write: that too writes nothing, but
    # it is not the fence this scenario proves (two loaded CI runs ended that way, with 0 "lease lost").
    system = start_system(make_system(LLM_BACKEND=FAULT_BACKEND, FAULT_BACKEND_SECONDS="1",
                                      SWEEP_INTERVAL="1", SWEEP_AGE="4", TASK_SOFT_TIME_LIMIT="30",
                                      TASK_TIME_LIMIT="40", VISIBILITY_TIMEOUT="60"),
                          core_workers=2, core_threads=1)
    book = FateBook()
    # One session, so the other worker's only work is to take it over once the frozen worker's lease expired.
    load = Load(system.base_url, book, callbacks.url, sessions=1, per_session=20, pause=0.2).start()
    frozen = system.procs["core"]
    assert frozen.popen is not None
    _pid, text = generating(clean_redis, [frozen.popen.pid], 0.3)
    frozen.signal_group(signal.SIGSTOP)
    stopped_at = time.time()
    time.sleep(3 * float(system.env["SESSION_LOCK_SECONDS"]))
    frozen.signal_group(signal.SIGCONT)
    load.join()
    wait_all_answered(book, [callbacks], 180, system.logs)
    frozen_id = message_of(book, text)
    answered = answered_at(callbacks, frozen_id) - stopped_at
    # Everyone may be answered before the woken worker, slowed by a loaded machine, reaches its fenced write:
    # give it the rest of its generation and a lease, ten times over (plumbing, not a promise to users).
    woken = 10 * (float(system.env["FAULT_BACKEND_SECONDS"]) + float(system.env["SESSION_LOCK_SECONDS"]))
    wait_until(lambda: "lease lost" in frozen.log(), woken, "the woken worker's fenced write refused", interval=0.5)
    tally = settle(book, [callbacks], runs=clean_redis.client())
    refused = frozen.log().count("lease lost")
    frozen_run = [r for r in book.runs if r.label == text and r.start < stopped_at]
    others = [r for r in book.runs if r not in frozen_run]
    report(tally.line("sigstop-core-worker", f"worker frozen {3 * float(system.env['SESSION_LOCK_SECONDS']):.0f}s "
                      f"mid-generation (lease {system.env['SESSION_LOCK_SECONDS']}s): the sweeper handed the session "
                      f"on and its message was answered {answered:.1f}s after the freeze; every overlap is the frozen "
                      f"run against its successor's, whose write the fence refused on waking ({refused} refused)"))
    assert tally.accepted == load.total and not tally.lost and tally.duplicates == 0, (tally, system.logs())
    assert tally.order_inversions == 0 and overlapping_runs(others) == 0 and refused >= 1
