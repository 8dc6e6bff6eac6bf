"""The core's Celery app and its per-process runtime, shared by the core's three worker entry modules.

``core_worker.llm_worker`` runs the LLM (queue ``core``); ``core_worker.delivery_worker`` the signed
replies and the sweeper (``deliver``); ``core_worker.helper_worker`` the helper calls (``helper.<name>``).
Only the first loads a model.  All register the same task names, so each sends the others' tasks by name.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

from core_worker.runtime import CoreRuntime
from core_worker.task_handlers import register_tasks
from tasks.celery_factory import create_celery
from tasks.settings import load_settings

__all__ = ["app", "loaded_runtime", "runtime", "settings"]

settings = load_settings()
app = create_celery(settings, main="switchboard-core")

_runtime: CoreRuntime | None = None


def runtime() -> CoreRuntime:
    """This process's runtime, built on first use (in the pool process, after fork)."""
    global _runtime
    if _runtime is None:
        _runtime = CoreRuntime(settings, app)
    return _runtime


def loaded_runtime() -> CoreRuntime | None:
    """The runtime if this process built one (never builds it)."""
    return _runtime


register_tasks(app, runtime)


@worker_process_init.connect
def _fresh_child(**_: Any) -> None:
    global _runtime
    _runtime = None  # never reuse the parent's connections in a child


@worker_process_shutdown.connect
@worker_shutdown.connect  # the threads pool's one process (the LLM worker: this closes its model's process)
def _close(**_: Any) -> None:
    if _runtime is not None:
        _runtime.close()
