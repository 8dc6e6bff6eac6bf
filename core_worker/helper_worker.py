"""Entry module of the helper worker: ``celery -A core_worker.helper_worker worker -Q helpers``.

It calls helpers for parked messages and resumes them on the core.  Each helper has its own queue
(``helper.<name>``), added while the worker runs as helpers register; nothing is sent to ``helpers``
itself, it names the role.  It never loads a model.
"""

from __future__ import annotations

from typing import Any

from celery_runtime.worker_role import WorkerRole, install_role
from core_worker.celery_app import app, runtime, settings
from core_worker.helper_queues import HelperQueueSync
from tasks.names import HELPER_QUEUE_PREFIX, QUEUE_HELPERS

__all__ = ["app"]

ROLE = WorkerRole("helper", QUEUE_HELPERS, extra_queue_prefix=HELPER_QUEUE_PREFIX)


def _consume_helper_queues(consumer: Any) -> None:
    HelperQueueSync(consumer, runtime().helpers, settings.helper_sync_interval).start()


install_role(app, settings, ROLE, concurrency=settings.helper_concurrency, on_ready=_consume_helper_queues)
