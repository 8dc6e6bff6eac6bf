"""The helper the SDK's own tests serve, in-process and as a gunicorn subprocess (``path:helper``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields, validate

from helper_sdk import Helper, HelperError, InvocationContext, Unavailable

PATH = Path(__file__).resolve()  # for `switchboard-helper run <PATH>:helper`

helper = Helper("sample", description="The SDK's test double", version="1.2.3")


class EchoIn(Schema):
    message = fields.String(required=True, validate=validate.Length(min=1, max=100))
    times = fields.Integer(load_default=1, validate=validate.Range(min=1, max=5))


class EchoOut(Schema):
    text = fields.String(required=True)


@helper.capability(input_schema=EchoIn, output_schema=EchoOut, reply="direct")
def echo(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    """Repeat a message."""
    return {"text": " ".join([data["message"]] * data["times"])}


WHOAMI_OUT = {
    "type": "object",
    "properties": {
        "pid": {"type": "integer"},
        "call_id": {"type": "string"},
        "message_id": {"type": "string"},
        "session_id": {"type": "string"},
        "channel": {"type": "string"},
        "capability": {"type": "string"},
    },
    "required": ["pid", "call_id"],
    "additionalProperties": False,
}


@helper.capability(input_schema={"type": "object", "additionalProperties": False}, output_schema=WHOAMI_OUT)
def whoami(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    """Say which process answered and what the context was."""
    return {
        "pid": os.getpid(),
        "call_id": context.call_id,
        "message_id": context.message_id,
        "session_id": context.session_id,
        "channel": context.channel,
        "capability": context.capability,
    }


MODES = ["helper_error", "unavailable", "crash", "bad_output", "not_json", "not_mapping", "fine"]


@helper.capability(
    input_schema={
        "type": "object",
        "properties": {"mode": {"type": "string", "enum": MODES}},
        "required": ["mode"],
    },
    output_schema={"type": "object", "properties": {"value": {}}, "additionalProperties": False},
)
def behave(data: dict[str, Any], context: InvocationContext) -> Any:
    """Misbehave on request, so every error path can be exercised."""
    mode = data["mode"]
    if mode == "helper_error":
        raise HelperError("no such city", status=404, fields={"city": ["unknown"]})
    if mode == "unavailable":
        raise Unavailable("weather service down", retry_after=7)
    if mode == "crash":
        raise RuntimeError("secret internals")
    if mode == "bad_output":
        return {"value": 1, "extra": 2}
    if mode == "not_json":
        return {"value": {1, 2}}
    if mode == "not_mapping":
        return [1, 2]
    return {"value": "fine"}
