"""Celery entry point of the workers: ``celery -A core_worker.worker worker -Q core``.

The same app serves the ``core`` queue (LLM) and the ``deliver`` queue; only
a worker that consumes ``core`` loads a model, in each pool process after
fork (``worker_process_init``): llama.cpp hangs in a child forked from a
parent that already ran it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init, worker_process_shutdown, worker_ready

from core_worker import observability
from core_worker.broker_recovery import RestoreHeldTasks, reconnect_listeners
from core_worker.helper_queues import HelperQueueSync
from core_worker.runtime import CoreRuntime, model_threads
from core_worker.sweeper import Sweeper
from core_worker.tasks import register_tasks
from edge.convert_tasks import register_convert_tasks
from tasks.celery_factory import create_celery
from tasks.names import QUEUE_CORE, QUEUE_DELIVER
from tasks.settings import load_settings

log = logging.getLogger(__name__)

settings = load_settings()
app = create_celery(settings, main="switchboard-core")

_runtime: CoreRuntime | None = None
_consumes_core = False


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
    global _consumes_core
    queues = instance.app.amqp.queues.consume_from
    _consumes_core = QUEUE_CORE in queues
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
    """Workers that deliver also call helpers (consume each helper's queue) and sweep stalled sessions."""
    if QUEUE_DELIVER in sender.app.amqp.queues.consume_from:
        rt = runtime()
        HelperQueueSync(sender, rt.helpers, settings.helper_sync_interval).start()
        sweeper = Sweeper(rt.redis, rt.keys, rt.messages, rt.resume, interval=settings.sweep_interval,
                          age=settings.sweep_age, redeliver=rt.processor.redeliver)
        reconnect_listeners.append(sweeper.after_reconnect)  # a recovery pass after each broker reconnect
        sweeper.start()


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
