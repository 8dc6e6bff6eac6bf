"""Celery task messages that our own Redis scripts push, so a state change and its task are one atomic step.

Admitting a message and queueing its task used to be two round trips with a
window between them (an edge killed in between left an admitted message
without a task, and a failed publish needed a rollback); finishing an answer
and queueing its delivery likewise.  Here the message is built with Celery's
own protocol builder (``app.amqp.as_task_v2``) and wrapped exactly as kombu's
Redis transport wraps it (``Channel.prepare_message`` + ``basic_publish``);
the Lua script that records the state change ``LPUSH``es it to the queue's
list, which is all kombu's ``_put`` does for a priority-0 message.  A unit
test compares the result with what ``send_task`` writes, so a kombu upgrade
that changes the format fails loudly.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery

from tasks.names import TASK_ROUTES

__all__ = ["QueuedTask", "queue_for", "task_message"]


@dataclass(frozen=True)
class QueuedTask:
    queue: str  # the Redis list kombu's worker consumes (priority 0)
    payload: str  # the JSON kombu would LPUSH


def queue_for(name: str) -> str:
    """The queue ``TASK_ROUTES`` sends task ``name`` to."""
    for pattern, route in TASK_ROUTES.items():
        if name == pattern or (pattern.endswith(".*") and name.startswith(pattern[:-1])):
            return route["queue"]
    raise KeyError(f"no route for task {name!r}")


def task_message(app: Celery, name: str, args: list[Any], *, queue: str | None = None) -> QueuedTask:
    """The kombu/Redis wire form of ``app.send_task(name, args=args)``."""
    queue = queue or queue_for(name)
    task_id = str(uuid.uuid4())
    message = app.amqp.as_task_v2(task_id, name, args=args, kwargs={})
    body = json.dumps(message.body).encode("utf-8")
    properties = {
        **message.properties,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    wire = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.headers,
        "properties": properties,
    }
    return QueuedTask(queue, json.dumps(wire))
