"""The edge in process, for the unit and security tests: a recording Celery over fakeredis."""

from __future__ import annotations

from typing import Any, Protocol

import fakeredis
from celery import Celery
from flask import Flask

from tasks.names import QUEUE_CONVERT, QUEUE_CORE, QUEUE_DELIVER
from tasks.settings import Settings
from tests.support.factories import queued_tasks


class RecordingCelery(Celery):
    """The edge's Celery app in unit tests.  The edge's admission script pushes task messages straight to
    the queue lists (tasks/enqueue.py): ``sent`` decodes what is queued there, in order; ``broken`` takes
    the (fake) Redis down, as a dead broker would be."""

    QUEUES = (QUEUE_CORE, QUEUE_CONVERT, QUEUE_DELIVER)

    def __init__(self, redis: fakeredis.FakeRedis) -> None:
        super().__init__("test", broker="memory://", set_as_current=False)
        self.redis = redis

    @property
    def sent(self) -> list[tuple[str, Any]]:
        return queued_tasks(self.redis, *self.QUEUES)

    @property
    def broken(self) -> bool:
        return not self.redis.connection_pool.connection_kwargs["server"].connected

    @broken.setter
    def broken(self, value: bool) -> None:
        self.redis.connection_pool.connection_kwargs["server"].connected = not value


class EdgeApp(Protocol):
    """The ``edge_app`` fixture: ``edge_app(**overrides)`` is the edge over the test's ``settings`` with
    ``overrides`` replaced, ``edge_app(other_settings, **overrides)`` over other settings; both use the
    test's ``fake_redis`` and ``celery_app``."""

    def __call__(self, base: Settings | None = None, /, **overrides: Any) -> Flask: ...
