"""Entry module of the LLM worker: ``celery -A core_worker.llm_worker worker -Q core``.

It runs only the model: each pool process loads it after fork (``worker_process_init``), since llama.cpp
hangs in a child forked from a parent that already ran it.  Everything else the core does without a
model runs in ``core_worker.io_worker``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_process_init

from celery_runtime.worker_role import WorkerRole, install_role
from core_worker.celery_app import app, loaded_runtime, runtime, settings
from core_worker.runtime import model_threads
from tasks.names import QUEUE_CORE

__all__ = ["app"]

log = logging.getLogger(__name__)

ROLE = WorkerRole("LLM", QUEUE_CORE)


def model_info() -> dict[str, Any]:
    """What this process's heartbeat says about its model (never loads it)."""
    rt = loaded_runtime()
    if rt is not None:
        return rt.model_info()
    path = settings.model_path or settings.model_file
    return {"backend": settings.llm_backend, "model": os.path.basename(path) if path else None,
            "loaded": False, "last_generation": None}


def _check_threads(instance: Any) -> None:
    cores = os.cpu_count() or 1
    threads = model_threads(settings, cores)
    if instance.concurrency * threads > cores:
        log.warning(
            "%d processes x %d model threads exceed %d cores: generation will be many times slower"
            " (set LLM_THREADS)", instance.concurrency, threads, cores,
        )


install_role(app, settings, ROLE, concurrency=settings.core_concurrency, model_info=model_info,
             on_setup=_check_threads)


@worker_process_init.connect
def _load_model(**_: Any) -> None:
    runtime().llm()  # after celery_app's reset: this child's own model
