"""Celery app factory: one place holds every reliability setting.

Why each setting (Celery's and kombu's guidance, plus what was measured here):
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged
  only once it finished, and a killed child's task goes back to the queue.
- ``worker_prefetch_multiplier=1``: a worker holds one message it is not
  working on at most, so a slow model does not sit on a backlog.
- soft/hard time limits below ``visibility_timeout``: Redis hands an unacked
  task to a second worker after the visibility timeout; a task must be dead
  before that happens or it runs twice in parallel.
- socket timeouts and health checks: without them a silent Redis blocks a
  worker forever.
- ``unacked_restore_interval``/``throttle``: how soon a live worker restores
  the messages a dead worker left unacknowledged.
- ``broker_transport``: kombu's Redis transport with a channel that still
  closes after its connection died (``tasks/broker_transport.py``); with
  kombu's own, a worker that lost Redis mid-BRPOP died on reconnect.
- ``amqp``: Celery's AMQP class with a connection that tries a lost broker
  again every <= 2 s (kombu's own waits up to 30 s between tries).
- JSON only, results ignored: nothing reads task results; replies travel
  through Redis status records and callbacks.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from tasks.broker_transport import AMQP_CLASS, BROKER_TRANSPORT
from tasks.names import QUEUE_CONVERT, QUEUE_CORE, QUEUE_DELIVER, QUEUE_HELPERS, TASK_ROUTES
from tasks.settings import Settings

__all__ = ["BROKER_TRANSPORT", "celery_config", "create_celery"]


def celery_config(settings: Settings) -> dict[str, Any]:
    restore = max(1, round(settings.unacked_restore_interval))
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": restore,
        "unacked_restore_throttle": 1,
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": settings.redis_health_check_interval,
        "retry_on_timeout": True,
    }
    return {
        "broker_url": settings.redis_url,
        "broker_transport": BROKER_TRANSPORT,
        "broker_transport_options": transport,
        "broker_connection_timeout": settings.redis_connect_timeout,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # A task's own retry is a publish: with Celery's default (3 tries, ~1 s) a Redis restart of a few
        # seconds made it fail, the task was rejected and its message waited for the sweeper (fault suite,
        # redis-kill-restart-aof: 145 s).  ~15 s of tries rides out a restart.
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 10, "interval_start": 0, "interval_step": 0.5,
                                      "interval_max": 2},
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "task_acks_late": True,
        "task_acks_on_failure_or_timeout": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": 10.0,
        # A core pool process loads its model in worker_process_init, before it tells the parent it is up;
        # Celery's default 4 s would kill it mid-load (seen under load, and any multi-GB model needs longer).
        "worker_proc_alive_timeout": settings.model_load_timeout,
        "worker_enable_soft_shutdown_on_idle": True,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "task_routes": TASK_ROUTES,
        "task_default_queue": QUEUE_CORE,
        "task_queues": [Queue(QUEUE_CORE), Queue(QUEUE_DELIVER), Queue(QUEUE_CONVERT), Queue(QUEUE_HELPERS)],
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }


def create_celery(settings: Settings, *, main: str = "switchboard", include: list[str] | None = None) -> Celery:
    """A configured Celery app; connects nowhere until a task is sent or a worker starts."""
    app = Celery(main, include=include or [], set_as_current=False, amqp=AMQP_CLASS)
    app.conf.update(celery_config(settings))
    return app
