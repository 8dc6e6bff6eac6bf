"""The Celery tasks: thin, like web views; the logic lives in processor.py and delivery.py."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded

from core_worker.delivery import Outcome, backoff_delay
from core_worker.observability import reply_outcome
from core_worker.runtime import CoreRuntime
from core_worker.sessions import LeaseLost
from tasks.names import CALL_HELPER, DELIVER_PARTIAL, DELIVER_REPLY, HANDLE_MESSAGE, helper_queue

__all__ = ["register_tasks"]

log = logging.getLogger(__name__)


def register_tasks(app: Celery, runtime: Callable[[], CoreRuntime]) -> None:
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
        raise self.retry(countdown=delay)

    @app.task(name=DELIVER_REPLY, bind=True, max_retries=None)
    def deliver_reply(self: Task, payload: dict) -> str:
        """POST a reply to its callback; retried with backoff until delivered or too old."""
        rt = runtime()
        try:
            outcome, detail = rt.deliverer.attempt(payload, owner=self.request.id or "")
        except redis.RedisError as exc:  # the outbox and claim make a retry safe; failing would lose the task
            log.warning("delivery of %s: %s; will retry", payload.get("message_id"), exc)
            s = rt.settings
            raise self.retry(countdown=backoff_delay(self.request.retries, s.delivery_backoff_base,
                                                     s.delivery_backoff_max)) from exc
        reply_outcome(payload, outcome)
        if outcome is Outcome.WAIT:
            raise self.retry(countdown=rt.settings.session_retry_seconds)
        if outcome is Outcome.RETRY:
            s = rt.settings
            delay = backoff_delay(self.request.retries, s.delivery_backoff_base, s.delivery_backoff_max)
            raise self.retry(countdown=delay)
        return f"{outcome.value}: {detail}"

    @app.task(name=DELIVER_PARTIAL, max_retries=0)
    def deliver_partial(payload: dict) -> str:
        """POST one partial reply to its channel callback; best effort, never retried (the next one follows)."""
        return runtime().partial_poster.post(payload)

    @app.task(name=CALL_HELPER, bind=True, max_retries=None)
    def call_helper(self: Task, message_id: str, session_id: str, call: dict) -> None:
        """Call a helper for a parked message, then resume it on the core (never waited on)."""
        delay = runtime().helper_caller.attempt(message_id, session_id, call, self.request.retries)
        if delay is not None:
            raise self.retry(countdown=delay, queue=helper_queue(call["helper"]))
