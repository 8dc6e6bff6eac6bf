"""The threads pool's time limits: SoftTimeLimitExceeded, then TimeLimitExceeded, raised in the task's thread."""

from __future__ import annotations

import threading
import time

import pytest
from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from celery_runtime.thread_limits import ThreadTimeLimits


def run_task(limits: ThreadTimeLimits, task_id: str, body: list[BaseException], swallow_soft: bool) -> threading.Thread:
    """A task that never ends by itself (a loop of short blocking calls, as an io task's reads are)."""

    def task() -> None:
        limits.started(task_id, "convert.attachments", soft=0.2, hard=0.6)
        try:
            while True:
                try:
                    while True:
                        time.sleep(0.02)
                except SoftTimeLimitExceeded as exc:
                    body.append(exc)
                    if not swallow_soft:
                        return
        except TimeLimitExceeded as exc:
            body.append(exc)
        finally:
            limits.finished(task_id)

    thread = threading.Thread(target=task, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("swallow_soft", "expected"), [
    (False, [SoftTimeLimitExceeded]),  # the soft limit ends a task that lets it
    (True, [SoftTimeLimitExceeded, TimeLimitExceeded]),  # one that swallows it gets the hard one
])
def test_the_limits_are_raised_in_the_tasks_thread(swallow_soft: bool, expected: list[type]) -> None:
    limits = ThreadTimeLimits(interval=0.02)
    limits.start()
    raised: list[BaseException] = []
    thread = run_task(limits, "t1", raised, swallow_soft=swallow_soft)
    thread.join(5)
    limits.stop()
    assert not thread.is_alive() and [type(e) for e in raised] == expected


def test_a_finished_task_or_one_without_limits_is_never_interrupted() -> None:
    limits = ThreadTimeLimits()
    limits.started("t3", "deliver.deliver_reply", soft=10, hard=20)
    limits.finished("t3")
    assert limits.check(time.monotonic() + 60) == 0
    limits.started("t4", "deliver.deliver_reply", soft=0, hard=0)  # no limits at all
    assert limits.check(time.monotonic() + 60) == 0
