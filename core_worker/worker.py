"""Celery entry point of the workers: ``celery -A core_worker.worker worker -Q core``.

The same app serves every queue; what a worker does follows from what it consumes:

- ``core``: the LLM. Only such a worker loads a model, in each pool process after fork
  (``worker_process_init``): llama.cpp hangs in a child forked from a parent that already ran it.
- ``deliver``: replies to people, and the sweeper.
- ``convert``: media to text.
- ``helpers``: helper calls (it consumes each live helper's ``helper.<name>`` queue).

The Procfile runs ``deliver``, ``convert`` and ``helpers`` as three workers, so that none can starve
another of threads (a slow attachment server holds ``convert`` threads only); one worker may consume
all three on a small install.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import (
    celeryd_after_setup,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from core_worker import observability
from core_worker.broker_recovery import RestoreHeldTasks, reconnect_listeners
from core_worker.helper_queues import HelperQueueSync
from core_worker.runtime import CoreRuntime, model_threads
from core_worker.sweeper import Sweeper
from core_worker.tasks import register_tasks
from core_worker.thread_limits import ThreadTimeLimits
from edge.convert_tasks import register_convert_tasks
from tasks.celery_factory import create_celery
from tasks.names import QUEUE_CORE, QUEUE_DELIVER, QUEUE_HELPERS
from tasks.settings import load_settings

log = logging.getLogger(__name__)

settings = load_settings()
app = create_celery(settings, main="switchboard-core")

_runtime: CoreRuntime | None = None
_consumes_core = False
_thread_limits: ThreadTimeLimits | None = None


def runtime() -> CoreRuntime:
    global _runtime
    if _runtime is None:
        _runtime = CoreRuntime(settings, app)
    return _runtime


register_tasks(app, runtime)
observability.install(app, settings, lambda: _runtime)  # logs, heartbeats, metrics (docs/operations.md)
register_convert_tasks(app, runtime)  # queue `convert`: channel-side media to text, never loads the model
app.steps["consumer"].add(RestoreHeldTasks)  # a lost broker connection's held tasks go back at once


@celeryd_after_setup.connect
def _note_queues(sender: Any, instance: Any, **_: Any) -> None:
    """Check the worker's shape before it takes any task."""
    global _consumes_core, _thread_limits
    queues = instance.app.amqp.queues.consume_from
    _consumes_core = QUEUE_CORE in queues
    if "thread" in str(getattr(instance, "pool_cls", "")).lower():  # Celery's limits do not apply there
        _thread_limits = ThreadTimeLimits()
    if QUEUE_DELIVER in queues and not settings.switchboard_secret:
        # SystemExit, because Celery only logs an Exception raised by a signal handler.
        raise SystemExit("SWITCHBOARD_SECRET is not set: replies cannot be signed (make run writes .run/secret)")
    cores = os.cpu_count() or 1
    threads = model_threads(settings, cores)
    if _consumes_core and instance.concurrency * threads > cores:
        log.warning(
            "%d processes x %d model threads exceed %d cores: generation will be many times slower"
            " (set LLM_THREADS)", instance.concurrency, threads, cores,
        )


@worker_ready.connect
def _start_io_threads(sender: Any, **_: Any) -> None:
    """Workers that call helpers consume each helper's queue; workers that deliver sweep stalled sessions."""
    queues = sender.app.amqp.queues.consume_from
    if _thread_limits is not None:
        _thread_limits.start()
        log.info("threads pool: the time limits (soft %g s, hard %g s) are raised by this worker's watchdog",
                 settings.task_soft_time_limit, settings.task_time_limit)
    if QUEUE_HELPERS in queues:
        HelperQueueSync(sender, runtime().helpers, settings.helper_sync_interval).start()
    if QUEUE_DELIVER in queues:
        rt = runtime()
        sweeper = Sweeper(rt.redis, rt.keys, rt.messages, rt.resume, interval=settings.sweep_interval,
                          age=settings.sweep_age, redeliver=rt.processor.redeliver)
        reconnect_listeners.append(sweeper.after_reconnect)  # a recovery pass after each broker reconnect
        sweeper.start()


@task_prerun.connect
def _task_started(task_id: str, task: Any, **_: Any) -> None:
    if _thread_limits is not None:
        hard, soft = getattr(task.request, "timelimit", None) or (None, None)
        _thread_limits.started(task_id, task.name, float(soft or task.soft_time_limit or settings.task_soft_time_limit),
                               float(hard or task.time_limit or settings.task_time_limit))


@task_postrun.connect
def _task_ended(task_id: str, **_: Any) -> None:
    if _thread_limits is not None:
        _thread_limits.finished(task_id)


@worker_process_init.connect
def _load_model(**_: Any) -> None:
    global _runtime
    _runtime = None  # never reuse the parent's connections in a child
    if _consumes_core:
        runtime().llm()


@worker_process_shutdown.connect
def _close(**_: Any) -> None:
    if _runtime is not None:
        _runtime.close()
