"""Our scripts LPUSH Celery messages themselves (tasks/enqueue.py): they must be what kombu's send_task writes.

If a Celery or kombu upgrade changes the wire format, this fails before any message is lost to it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tasks.celery_factory import create_celery
from tasks.enqueue import queue_for, task_message
from tasks.names import CONVERT_ATTACHMENTS, DELIVER_REPLY, HANDLE_MESSAGE, QUEUE_CONVERT, QUEUE_CORE, QUEUE_DELIVER
from tasks.settings import load_settings
from tests.support.harness import RedisServer

pytestmark = pytest.mark.integration

VARYING = {"id", "root_id", "origin", "correlation_id", "delivery_tag", "reply_to", "ignore_result"}


def _shape(raw: str) -> dict[str, Any]:
    """The message with per-message values (ids, origin) blanked and the body decoded."""
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    for part in (message["headers"], message["properties"]):
        for name in VARYING & part.keys():
            part[name] = "*"
    return dict(message)


def test_queue_for_follows_the_routes() -> None:
    assert queue_for(HANDLE_MESSAGE) == QUEUE_CORE
    assert queue_for(DELIVER_REPLY) == QUEUE_DELIVER
    assert queue_for(CONVERT_ATTACHMENTS) == QUEUE_CONVERT
    with pytest.raises(KeyError):
        queue_for("nowhere.task")


@pytest.mark.parametrize("name", [HANDLE_MESSAGE, DELIVER_REPLY, CONVERT_ATTACHMENTS])
def test_our_message_is_what_send_task_writes(clean_redis: RedisServer, name: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", clean_redis.url)
    app = create_celery(load_settings())
    args: list[Any] = [{"message_id": "m1", "text": "héllo"}] if name == DELIVER_REPLY else ["m1", "api:alice"]
    client = clean_redis.client()
    app.send_task(name, args=args)
    queue = queue_for(name)
    theirs = client.lpop(queue)
    ours = task_message(app, name, args)
    assert ours.queue == queue
    assert theirs is not None
    assert _shape(ours.payload) == _shape(str(theirs))
