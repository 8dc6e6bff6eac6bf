"""Entry module of the LLM worker: ``celery -A core_worker.llm_worker worker -Q core --pool threads``.

It runs only the model.  ``LLM_PARALLEL`` task threads share one model, which lives in a child process
(core_worker/llm/model_process.py) started as the worker becomes ready, so that their conversations are
generated in one batch and a crash of the model takes down no task thread.  Everything else the core does
without a model runs in ``core_worker.delivery_worker`` and ``core_worker.helper_worker``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery_runtime.worker_role import WorkerRole, install_role
from core_worker.celery_app import app, loaded_runtime, runtime, settings
from core_worker.llm import LLMError
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


def _check_pool(instance: Any) -> None:
    """The task threads must share the process that holds the model: only the threads pool does that."""
    pool = str(getattr(instance, "pool_cls", "")).lower()
    if "thread" not in pool:
        raise SystemExit(f"the LLM worker runs on the threads pool (--pool threads), {settings.parallel_conversations}"
                         f" task threads sharing one model (LLM_PARALLEL); it was started with {pool or '?'}")
    cores = os.cpu_count() or 1
    if model_threads(settings, cores) > cores:
        log.warning("LLM_THREADS=%d exceeds %d cores: generation will be many times slower",
                    model_threads(settings, cores), cores)


def _load_model(_: Any) -> None:
    """Start the model's process while the worker takes its first tasks (they wait for it)."""
    def load() -> None:
        try:
            runtime().llm()
        except LLMError:
            log.exception("the model could not be loaded; each task retries it")

    threading.Thread(target=load, name="model-load", daemon=True).start()


install_role(app, settings, ROLE, concurrency=settings.parallel_conversations, model_info=model_info,
             on_setup=_check_pool, on_ready=_load_model)
