"""Entry module of the convert worker: ``celery -A edge.convert_worker worker -Q convert``.

Media to text is channel-side work: the ``convert.attachments`` task turns a message's attachments into
text (each conversion a child process with hard limits, ``edge/media/``), then sends the message to the
core by name.  It needs only Redis (messages, the helper registry) and never loads a model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from celery import Celery, Task

from celery_runtime.worker_role import WorkerRole, install_role
from edge.media.step import ConvertStep, Retry
from redis_stores.helper_registry import HelperRegistry, registry_from_settings
from redis_stores.messages import MessageStore
from redis_stores.redis_client import redis_client
from tasks.celery_factory import create_celery
from tasks.keys import Keys
from tasks.names import CONVERT_ATTACHMENTS, HANDLE_MESSAGE, QUEUE_CONVERT
from tasks.settings import Settings, load_settings

__all__ = ["ConvertRuntime", "app", "register_convert_tasks"]

log = logging.getLogger(__name__)

UNEXPECTED_RETRIES = 5


class Deps(Protocol):
    """What the task needs from its worker's runtime."""

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


class ConvertRuntime:
    """The convert worker's stores, built once per process on first use."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings, self.app = settings, app
        keys = Keys(settings.key_prefix)
        client = redis_client(settings)
        self.messages = MessageStore(client, keys, status_ttl=settings.status_ttl_seconds,
                                     idempotency_ttl=settings.idempotency_ttl_seconds)
        self.helpers = registry_from_settings(client, keys, settings)

    def resume(self, message_id: str, session_id: str) -> None:
        """The converted message goes to the core, by name (this side never imports the core)."""
        self.app.send_task(HANDLE_MESSAGE, args=[message_id, session_id])


settings = load_settings()
app = create_celery(settings, main="switchboard-convert")
_runtime: list[ConvertRuntime] = []


def _convert_runtime() -> ConvertRuntime:
    if not _runtime:
        _runtime.append(ConvertRuntime(settings, app))
    return _runtime[0]


register_convert_tasks(app, _convert_runtime)
ROLE = WorkerRole("convert", QUEUE_CONVERT)
install_role(app, settings, ROLE, concurrency=settings.convert_concurrency)
