"""Every worker's observability: logs tagged with the message, heartbeats, task metrics.

``install(app, settings, model_info)`` connects Celery signals:
- ``setup_logging``: our JSON/text logging instead of Celery's;
- ``celeryd_after_setup``: the process role (``core``/``io``/``convert``/``helpers`` from ``core@%h``);
- ``worker_ready`` / ``worker_process_init``: a heartbeat thread in the main process and in each
  prefork child (the child is where the model lives);
- ``task_prerun`` / ``task_postrun``: bind the task's message id to the log lines of its thread,
  time the task (``switchboard_task_seconds``) and log one line when it ends;
- ``worker_process_shutdown`` / ``worker_shutdown``: remove the heartbeat, flush the metrics.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_after_setup,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from redis_stores.redis_client import redis_client
from tasks.keys import Keys
from tasks.settings import Settings
from telemetry import metrics
from telemetry.heartbeat import Heartbeat
from telemetry.logs import bind_message, configure_logging, ids_from_task_args, set_role, unbind_message

__all__ = ["ModelInfo", "install"]

log = logging.getLogger("switchboard.worker")

_POOL_NAMES = {"thread": "threads"}  # module of the pool class -> the name `--pool` takes

_state: dict[str, Any] = {"hostname": "", "pool": "", "concurrency": 0, "heartbeat": None, "started": {}}


ModelInfo = Callable[[], dict[str, Any]]


def install(app: Celery, settings: Settings, model_info: ModelInfo | None = None) -> None:
    """Connect the signals; ``model_info`` (the LLM worker's only) says what its heartbeats report of the model."""
    keys = Keys(settings.key_prefix)
    metrics.configure(lambda: redis_client(settings), keys, settings.metrics_flush_interval)

    def queues(consumer_app: Celery) -> list[str]:
        return sorted(consumer_app.amqp.queues.consume_from)

    def model() -> dict[str, Any] | None:
        return model_info() if model_info is not None else None

    def start_heartbeat(describe: Callable[[], dict[str, Any]]) -> None:
        beat = Heartbeat(redis_client(settings), keys, _state["hostname"], settings.worker_heartbeat_interval,
                         describe)
        _state["heartbeat"] = beat
        beat.start()

    def stop_heartbeat() -> None:
        beat: Heartbeat | None = _state["heartbeat"]
        if beat is not None and beat.pid == os.getpid():
            beat.stop()
        metrics.flush_now()

    @setup_logging.connect(weak=False)
    def _logging(loglevel: Any = None, **_: Any) -> None:
        configure_logging("worker", settings.log_format, loglevel or settings.log_level)

    @celeryd_after_setup.connect(weak=False)
    def _role(sender: Any, instance: Any, **_: Any) -> None:
        module = str(getattr(instance.pool_cls, "__module__", "")).rsplit(".", 1)[-1]
        _state.update(hostname=str(sender), concurrency=int(instance.concurrency or 0),
                      pool=_POOL_NAMES.get(module, module))
        set_role(str(sender).split("@", 1)[0])

    @worker_ready.connect(weak=False)
    def _main_heartbeat(sender: Any, **_: Any) -> None:
        consumer_app = sender.app
        in_children = _state["pool"] == "prefork"
        start_heartbeat(lambda: {
            "kind": "worker", "queues": queues(consumer_app), "pool": _state["pool"],
            "concurrency": _state["concurrency"], "model": None if in_children else model(),
        })

    @worker_process_init.connect(weak=False)
    def _child_heartbeat(**_: Any) -> None:
        start_heartbeat(lambda: {"kind": "pool", "parent_pid": os.getppid(), "queues": queues(app),
                                 "model": model()})

    @worker_process_shutdown.connect(weak=False)
    def _child_exit(**_: Any) -> None:
        stop_heartbeat()

    @worker_shutdown.connect(weak=False)
    def _main_exit(**_: Any) -> None:
        stop_heartbeat()

    @task_prerun.connect(weak=False)
    def _task_start(task_id: str, task: Any, args: Any = None, **_: Any) -> None:
        bind_message(*ids_from_task_args(args))
        _state["started"][task_id] = time.perf_counter()

    @task_postrun.connect(weak=False)
    def _task_end(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
        started = _state["started"].pop(task_id, None)
        seconds = time.perf_counter() - started if started is not None else 0.0
        metrics.observe("switchboard_task_seconds", seconds, task=task.name, state=state or "")
        # Celery's own "succeeded" line already carries the ids (it is logged inside the task's context).
        log.log(logging.DEBUG if state == "SUCCESS" else logging.INFO, "task %s %s", task.name, (state or "").lower(),
                extra={"task": task.name, "state": state, "duration_ms": round(seconds * 1000, 1)})
        unbind_message()
