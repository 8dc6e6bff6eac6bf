"""A retry the broker cannot take is published again, not rejected (the task would be gone)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery.exceptions import Reject, Retry

from core_worker.task_handlers import patient_retry


class FlakyBroker:
    """A bound task whose ``retry`` fails to publish ``failures`` times (as Celery reports it), then succeeds."""

    name = "deliver.deliver_reply"

    def __init__(self, failures: int, reason: Exception | None = None) -> None:
        self.failures, self.reason, self.calls = failures, reason or redis.TimeoutError("Timeout reading"), 0

    def retry(self, **options: Any) -> Exception:
        self.calls += 1
        if self.calls <= self.failures:
            raise Reject(self.reason, requeue=False)
        raise Retry("Retry in 1s", when=options.get("countdown"))


def test_a_retry_is_published_again_until_the_broker_takes_it() -> None:
    task, slept, now = FlakyBroker(failures=3), [], [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    retry = patient_retry(task, 30, sleep=sleep, clock=lambda: now[0], countdown=2)
    assert isinstance(retry, Retry) and task.calls == 4 and slept == [1.0, 1.0, 1.0]


def test_past_its_patience_the_reject_stands() -> None:
    task, now = FlakyBroker(failures=100), [0.0]
    with pytest.raises(Reject):
        patient_retry(task, 5, sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert task.calls == 6


def test_a_reject_for_anything_but_the_broker_is_not_retried() -> None:
    task = FlakyBroker(failures=1, reason=ValueError("bad arguments"))
    with pytest.raises(Reject):
        patient_retry(task, 30, sleep=lambda _s: None)
    assert task.calls == 1
