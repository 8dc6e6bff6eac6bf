"""Entry module of the delivery worker: ``celery -A core_worker.delivery_worker worker -Q deliver``.

It posts the signed replies (and partial replies) to the channels' callbacks, and runs the sweeper that
re-drives stalled sessions and lost deliveries.  It never loads a model.
"""

from __future__ import annotations

from typing import Any

from celery_runtime.broker_recovery import reconnect_listeners
from celery_runtime.worker_role import WorkerRole, install_role
from core_worker.celery_app import app, runtime, settings
from core_worker.sweeper import Sweeper
from tasks.names import QUEUE_DELIVER

__all__ = ["app"]

ROLE = WorkerRole("delivery", QUEUE_DELIVER)


def _need_secret(instance: Any) -> None:
    if not settings.switchboard_secret:
        # SystemExit, because Celery only logs an Exception raised by a signal handler.
        raise SystemExit("SWITCHBOARD_SECRET is not set: replies cannot be signed (make run writes .run/secret)")


def _start_sweeper(consumer: Any) -> None:
    rt = runtime()
    sweeper = Sweeper(rt.redis, rt.keys, rt.messages, rt.resume, interval=settings.sweep_interval,
                      age=settings.sweep_age, redeliver=rt.processor.redeliver)
    reconnect_listeners.append(sweeper.after_reconnect)  # a recovery pass after each broker reconnect
    sweeper.start()


install_role(app, settings, ROLE, concurrency=settings.io_concurrency, on_setup=_need_secret, on_ready=_start_sweeper)
