"""Builders for test data."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery
from flask.testing import FlaskClient

from core_worker.llm import ChatMessage, Completion
from tasks.enqueue import QueuedTask, task_message
from tasks.names import DELIVER_REPLY, QUEUE_DELIVER
from tasks.schemas import Envelope, ReplyRoute, new_message_id

# Client keys of the test edges (API_KEYS): two tenants, so a test can be the other one.
API_KEY = "tests-key-0123456789abcdef"
OTHER_API_KEY = "others-key-0123456789abcdef"
API_KEYS = f"tests={API_KEY},others={OTHER_API_KEY}"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_API_KEY}"}


def keyed(client: FlaskClient, key: str = API_KEY) -> FlaskClient:
    """A Flask test client that sends ``key`` with every request (a test may still pass its own header)."""
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


def envelope(session_id: str = "api:alice", text: str = "hello", **overrides: Any) -> Envelope:
    values: dict[str, Any] = {
        "message_id": new_message_id(),
        "channel": "api",
        "channel_message_id": None,
        "sender": "alice",
        "session_id": session_id,
        "text": text,
        "reply": ReplyRoute(callback_url="http://127.0.0.1:9/cb", context={"k": "v"}),
    }
    values.update(overrides)
    return Envelope(**values)


# -- tasks queued straight to Redis by our scripts (tasks/enqueue.py) ------------------------------------------
TEST_CELERY = Celery("switchboard-tests", set_as_current=False)


def delivery_task(payload: dict[str, Any]) -> QueuedTask:
    """What the core's runtime builds for a reply: the real wire form, queued by the session store."""
    return task_message(TEST_CELERY, DELIVER_REPLY, [payload])


def queued_tasks(client: redis.Redis, *queues: str) -> list[tuple[str, list[Any]]]:
    """(task name, args) of the Celery messages waiting in ``queues``, oldest first (kombu LPUSHes)."""
    tasks = []
    for queue in queues:
        for raw in reversed(client.lrange(queue, 0, -1)):
            message = json.loads(raw)
            tasks.append((message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[0]))
    return tasks


class QueuedDeliveries(Sequence[dict[str, Any]]):
    """The reply payloads of the deliver tasks queued so far, oldest first."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def _payloads(self) -> list[dict[str, Any]]:
        return [args[0] for name, args in queued_tasks(self.client, QUEUE_DELIVER) if name == DELIVER_REPLY]

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        return self._payloads()[index]

    def __len__(self) -> int:
        return len(self._payloads())

    def __eq__(self, other: object) -> bool:
        return self._payloads() == other

    __hash__ = None  # type: ignore[assignment]


# -- a model and a helper for the processor's tests ---------------------------------------------------------
class ScriptedLLM:
    """A model double that echoes, records prompts, and fails on request."""

    name = "scripted"
    context_length = 2048
    constrains_json = False

    def __init__(self) -> None:
        self.prompts: list[list[ChatMessage]] = []
        self.fail_on: set[str] = set()

    def chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        self.prompts.append(list(messages))
        if messages[-1].content in self.fail_on:
            raise RuntimeError("model exploded")
        return Completion(f"echo: {messages[-1].content}", 10, 3, "stop")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


CALCULATOR = {
    "name": "calculator", "url": "http://127.0.0.1:8100", "version": "1", "description": "",
    "capabilities": [{
        "name": "calculate", "description": "Evaluate arithmetic",
        "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}},
                         "required": ["expression"]},
        "output_schema": {"type": "object", "properties": {"text": {"type": "string"}}}, "reply": "direct",
    }],
}


def manifest(**overrides: Any) -> dict[str, Any]:
    """A helper's registration body (the calculator), with ``overrides``."""
    body: dict[str, Any] = {
        "name": "calculator",
        "url": "http://127.0.0.1:8100",
        "version": "1.0.0",
        "description": "Arithmetic",
        "capabilities": [
            {
                "name": "calculate",
                "description": "Evaluate an arithmetic expression",
                "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}},
                                 "required": ["expression"]},
                "output_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
                "reply": "direct",
            }
        ],
    }
    body.update(overrides)
    return body
