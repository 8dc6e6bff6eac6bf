"""The ``convert.attachments`` task (queue ``convert``): media to text on channel-side workers.

Registered on the workers' Celery app by ``core_worker/worker.py``; it needs
only Redis (messages, helper registry) and never loads the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from celery import Celery, Task

from edge.media.step import ConvertStep, Retry
from tasks.helpers import HelperRegistry
from tasks.messages import MessageStore
from tasks.names import CONVERT_ATTACHMENTS
from tasks.settings import Settings

__all__ = ["register_convert_tasks"]

log = logging.getLogger(__name__)

UNEXPECTED_RETRIES = 5


class Deps(Protocol):
    """What the task needs from the worker's runtime (the core's runtime object fits)."""

    settings: Settings
    messages: MessageStore
    helpers: HelperRegistry

    def resume(self, message_id: str, session_id: str) -> None: ...


def register_convert_tasks(app: Celery, deps: Callable[[], Deps]) -> None:
    steps: dict[int, ConvertStep] = {}

    def step() -> ConvertStep:
        rt = deps()
        if id(rt) not in steps:  # one per runtime (a new one after fork)
            steps.clear()
            steps[id(rt)] = ConvertStep(rt.settings, rt.messages, rt.helpers, rt.resume)
        return steps[id(rt)]

    @app.task(name=CONVERT_ATTACHMENTS, bind=True, max_retries=None)
    def convert_attachments(self: Task, message_id: str, session_id: str) -> str:
        """Turn a message's attachments into text, then hand it to the core (idempotent)."""
        try:
            return step().run(message_id, self.request.retries)
        except Retry as again:
            log.info("convert %s again in %.1fs: %s", message_id, again.delay, again)
            raise self.retry(countdown=again.delay) from again
        except Exception as exc:  # Redis blip, a bug: retry a few times, then never leave the message stuck
            if self.request.retries < UNEXPECTED_RETRIES:
                log.warning("convert %s failed (%s); will retry", message_id, exc, exc_info=True)
                raise self.retry(countdown=min(2.0 ** self.request.retries, 30.0)) from exc
            log.exception("convert %s failed for good", message_id)
            return step().give_up(message_id, "an internal error stopped the conversion")
