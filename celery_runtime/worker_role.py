"""One worker role's setup, shared by every worker entry module.

A role names the one queue its worker consumes; the entry module states it, and the worker refuses to
start on any other (a ``-Q`` typo would otherwise make an LLM worker deliver, or load a model it never
uses).  The setup is the same for every role: the time-limit watchdog on a threads pool, the broker
recovery step, and the observability signals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup, task_postrun, task_prerun, worker_ready

from celery_runtime import worker_signals
from celery_runtime.broker_recovery import RestoreHeldTasks
from celery_runtime.thread_limits import ThreadTimeLimits
from tasks.settings import Settings

__all__ = ["WorkerRole", "install_role"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerRole:
    """``queue`` is what ``-Q`` must say; ``extra_queues`` are added at run time (``helper.<name>``)."""

    name: str
    queue: str
    extra_queue_prefix: str = ""

    def check(self, queues: Iterable[str]) -> None:
        odd = sorted(q for q in queues if q != self.queue and not
                     (self.extra_queue_prefix and q.startswith(self.extra_queue_prefix)))
        if self.queue not in queues or odd:
            # SystemExit, because Celery only logs an Exception raised by a signal handler.
            raise SystemExit(f"the {self.name} worker consumes the queue {self.queue!r} only (-Q {self.queue});"
                             f" it was started with {sorted(queues)}")


def install_role(app: Celery, settings: Settings, role: WorkerRole, *, concurrency: int,
                 model_info: worker_signals.ModelInfo | None = None,
                 on_setup: Callable[[Any], None] | None = None,
                 on_ready: Callable[[Any], None] | None = None) -> None:
    """Connect the role's signals: ``on_setup(instance)`` before any task, ``on_ready(consumer)`` after.

    ``concurrency`` (a setting, e.g. ``IO_CONCURRENCY``) is the worker's unless ``--concurrency`` overrides it.
    """
    app.conf.worker_concurrency = concurrency
    limits: dict[str, ThreadTimeLimits] = {}
    worker_signals.install(app, settings, model_info)  # logs, heartbeats, metrics (docs/operations.md)
    app.steps["consumer"].add(RestoreHeldTasks)  # a lost broker connection's held tasks go back at once

    @celeryd_after_setup.connect(weak=False)
    def _setup(sender: Any, instance: Any, **_: Any) -> None:
        role.check(instance.app.amqp.queues.consume_from)
        if "thread" in str(getattr(instance, "pool_cls", "")).lower():  # Celery's limits do not apply there
            limits["threads"] = ThreadTimeLimits()
        if on_setup is not None:
            on_setup(instance)

    @worker_ready.connect(weak=False)
    def _ready(sender: Any, **_: Any) -> None:
        watchdog = limits.get("threads")
        if watchdog is not None:
            watchdog.start()
            log.info("threads pool: the time limits (soft %g s, hard %g s) are raised by this worker's watchdog",
                     settings.task_soft_time_limit, settings.task_time_limit)
        if on_ready is not None:
            on_ready(sender)

    @task_prerun.connect(weak=False)
    def _task_started(task_id: str, task: Any, **_: Any) -> None:
        watchdog = limits.get("threads")
        if watchdog is not None:
            hard, soft = getattr(task.request, "timelimit", None) or (None, None)
            watchdog.started(task_id, task.name,
                             float(soft or task.soft_time_limit or settings.task_soft_time_limit),
                             float(hard or task.time_limit or settings.task_time_limit))

    @task_postrun.connect(weak=False)
    def _task_ended(task_id: str, **_: Any) -> None:
        watchdog = limits.get("threads")
        if watchdog is not None:
            watchdog.finished(task_id)
