"""Structured logs: one JSON object per line, carrying the message being worked on."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from telemetry.logs import ContextFilter, JsonFormatter, bind_message, bound_message, ids_from_task_args, unbind_message


def formatted(message: str, *args: object, exc: bool = False, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("core_worker.processor", logging.WARNING, __file__, 1, message, args,
                               None, func=None)
    for name, value in extra.items():
        setattr(record, name, value)
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys
            record.exc_info = sys.exc_info()
    ContextFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_a_line_has_the_fields_and_the_bound_message() -> None:
    with bound_message("m-1", "api:alice"):
        line = formatted("answered %s in %d ms", "m-1", 12)
    assert line["message"] == "answered m-1 in 12 ms"
    assert line["level"] == "WARNING" and line["logger"] == "core_worker.processor"
    assert line["message_id"] == "m-1" and line["session_id"] == "api:alice"
    assert {"ts", "role", "pid"} <= set(line)
    assert "message_id" not in formatted("after the block")


def test_extra_fields_are_kept_and_celery_task_payloads_are_not() -> None:
    line = formatted("task done", task="core.handle_message", duration_ms=3.5,
                     data={"id": "t1", "name": "deliver.deliver_reply", "args": "[{'text': 'private'}]",
                           "return_value": "'private'"})
    assert line["task"] == "core.handle_message" and line["duration_ms"] == 3.5
    assert line["data"] == {"id": "t1", "name": "deliver.deliver_reply"}
    assert "private" not in json.dumps(line)


def test_exceptions_stay_on_one_line() -> None:
    line = formatted("failed", exc=True)
    assert "ValueError: boom" in str(line["exc"])


def test_ids_are_per_thread() -> None:
    bind_message("main-thread", "s")
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(formatted("in a thread").get("message_id")))
    thread.start()
    thread.join()
    assert seen == [None]
    unbind_message()


@pytest.mark.parametrize(("args", "expected"), [
    (["m1", "api:bob"], ("m1", "api:bob")),  # core.handle_message, convert.attachments
    (["m1", "api:bob", {"helper": "calc"}], ("m1", "api:bob")),  # helper.call
    ([{"message_id": "m1", "session_id": "api:bob", "text": "hi"}], ("m1", "api:bob")),  # deliver.deliver_reply
    ([], (None, None)),
    (None, (None, None)),
    ([42], (None, None)),
])
def test_the_message_of_a_task_comes_from_its_arguments(args: object, expected: tuple[str | None, str | None]) -> None:
    assert ids_from_task_args(args) == expected
