"""The Celery tasks: thin, like web views; the logic lives in processor.py and delivery.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError

from core_worker.delivery import Outcome, backoff_delay
from core_worker.reply_metrics import reply_outcome
from core_worker.runtime import CoreRuntime
from core_worker.sessions import LeaseLost
from tasks.names import CALL_HELPER, DELIVER_PARTIAL, DELIVER_REPLY, HANDLE_MESSAGE, helper_queue

__all__ = ["patient_retry", "register_tasks"]

log = logging.getLogger(__name__)

BROKER_ERRORS = (redis.RedisError, OperationalError, OSError)


def patient_retry(task: Task, patience: float, sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic, **options: Any) -> Exception:
    """``task.retry(**options)``, publishing the retry again while the broker cannot take it.

    Celery rejects a task whose retry cannot be published (``Reject(requeue=False)``): the task is gone, and
    its message waited for the sweeper (SWEEP_INTERVAL + SWEEP_AGE, found by bench/redis_recovery.py
    sigstop-30s: 120.5 s).  A retry is the task's only future, so it is tried again for ``patience`` seconds
    (more than an outage the socket timeouts outlast).  Returns the Retry to raise; raises the Reject after.
    """
    deadline = clock() + patience
    while True:
        try:
            return task.retry(**options)
        except Retry as retry:
            return retry
        except Reject as reject:
            if not isinstance(reject.reason, BROKER_ERRORS) or clock() >= deadline:
                raise
            log.warning("the retry of %s could not be queued (%s): trying again", task.name, reject.reason)
            sleep(1.0)


def register_tasks(app: Celery, runtime: Callable[[], CoreRuntime]) -> None:
    def retry(task: Task, **options: Any) -> Exception:
        """The task's retry, published with patience for half its soft time limit (``patient_retry``)."""
        return patient_retry(task, runtime().settings.task_soft_time_limit / 2, **options)

    @app.task(name=HANDLE_MESSAGE, bind=True, max_retries=None)
    def handle_message(self: Task, message_id: str, session_id: str) -> None:
        """Answer ``message_id`` (and whatever precedes it in its session); retry until it is done."""
        rt = runtime()
        try:
            if rt.processor.run(session_id, message_id):
                return
        except (LeaseLost, SoftTimeLimitExceeded, redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("session %s: %s; will retry", session_id, exc)
        except Exception:
            log.exception("session %s failed; will retry (attempts are counted per message)", session_id)
        try:
            delay = rt.processor.retry_delay(session_id, message_id)
        except redis.RedisError:
            delay = rt.settings.session_retry_seconds
        raise retry(self, countdown=delay)

    @app.task(name=DELIVER_REPLY, bind=True, max_retries=None)
    def deliver_reply(self: Task, payload: dict) -> str:
        """POST a reply to its callback; retried with backoff until delivered or too old."""
        rt = runtime()
        try:
            outcome, detail = rt.deliverer.attempt(payload, owner=self.request.id or "")
        except redis.RedisError as exc:  # the outbox and claim make a retry safe; failing would lose the task
            log.warning("delivery of %s: %s; will retry", payload.get("message_id"), exc)
            s = rt.settings
            delay = backoff_delay(self.request.retries, s.delivery_backoff_base, s.delivery_backoff_max)
            raise retry(self, countdown=delay) from exc
        reply_outcome(payload, outcome)
        if outcome is Outcome.WAIT:
            raise retry(self, countdown=rt.settings.session_retry_seconds)
        if outcome is Outcome.RETRY:
            s = rt.settings
            delay = backoff_delay(self.request.retries, s.delivery_backoff_base, s.delivery_backoff_max)
            raise retry(self, countdown=delay)
        return f"{outcome.value}: {detail}"

    @app.task(name=DELIVER_PARTIAL, max_retries=0)
    def deliver_partial(payload: dict) -> str:
        """POST one partial reply to its channel callback; best effort, never retried (the next one follows)."""
        return runtime().partial_poster.post(payload)

    @app.task(name=CALL_HELPER, bind=True, max_retries=None)
    def call_helper(self: Task, message_id: str, session_id: str, call: dict) -> None:
        """Call a helper for a parked message, then resume it on the core (never waited on)."""
        rt = runtime()
        delay = rt.helper_caller.attempt(message_id, session_id, call, self.request.retries)
        if delay is not None:
            raise retry(self, countdown=delay, queue=helper_queue(call["helper"]))
