"""The helper SDK's ``POST /invoke/<capability>``: forged, tampered, stale and replayed calls.

The SDK verifies Standard Webhooks signatures (five-minute window) before it
parses the body.  It does *not* refuse a repeated ``webhook-id``, and says so
(docs/helpers.md, "Replays and retries"): the core itself sends the same call
id again when it retries after a timeout, so a replay within the window
reaches the handler with the same ``context.call_id``, the key a handler with
side effects deduplicates on.  Tested here as the SDK documents it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from helper_sdk import Helper, InvocationContext
from tasks.signing import new_secret, sign_headers

SECRET = new_secret()
IN = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 100}}, "required": ["text"],
      "additionalProperties": False}
OUT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


@pytest.fixture
def calls() -> list[tuple[dict[str, Any], str]]:
    return []


@pytest.fixture
def helper_client(calls: list[tuple[dict[str, Any], str]]) -> FlaskClient:
    helper = Helper("shouter", description="Shouts", version="1")

    @helper.capability(name="shout", input_schema=IN, output_schema=OUT)
    def shout(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
        """Shout the text."""
        calls.append((data, context.call_id))
        return {"text": data["text"].upper()}

    return helper.create_app(SECRET).test_client()


def body(text: str = "hi") -> str:
    return json.dumps({"input": {"text": text}, "context": {"call_id": "c1", "session_id": "api:alice"}})


def invoke(client: FlaskClient, raw: str, headers: dict[str, str]) -> Any:
    return client.post("/invoke/shout", data=raw, headers=headers)


def test_a_signed_call_is_answered(helper_client: FlaskClient, calls: list[Any]) -> None:
    response = invoke(helper_client, body(), sign_headers(SECRET, "c1", body()))
    assert response.status_code == 200 and response.get_json() == {"output": {"text": "HI"}}
    assert calls == [({"text": "hi"}, "c1")]


def test_forged_tampered_stale_and_unsigned_calls_never_reach_the_handler(
    helper_client: FlaskClient, calls: list[Any]
) -> None:
    now = datetime.now(UTC)
    forged = sign_headers(new_secret(), "c1", body())
    tampered = sign_headers(SECRET, "c1", body("hi"))  # signed for "hi", sent with other text
    stale = sign_headers(SECRET, "c1", body(), now=now - timedelta(minutes=6))
    future = sign_headers(SECRET, "c1", body(), now=now + timedelta(minutes=6))
    other_id = {**sign_headers(SECRET, "c1", body()), "webhook-id": "c2"}  # the id is signed too
    mangled = {**sign_headers(SECRET, "c1", body()), "webhook-signature": "v1,@@not-base64@@"}
    cases = [(body(), forged), (body("rm -rf /"), tampered), (body(), stale), (body(), future), (body(), other_id),
             (body(), mangled), (body(), {"content-type": "application/json"})]
    for raw, headers in cases:
        response = invoke(helper_client, raw, headers)
        assert response.status_code == 401, (headers, response.get_json())
        assert response.get_json() == {"error": "invalid or missing signature"}
    assert calls == []


def test_a_replay_within_the_window_carries_the_same_call_id(helper_client: FlaskClient, calls: list[Any]) -> None:
    """What the SDK promises for replays: the idempotency key is stable, so a handler can drop repeats."""
    headers = sign_headers(SECRET, "call-9", body())
    assert invoke(helper_client, body(), headers).status_code == 200
    assert invoke(helper_client, body(), headers).status_code == 200
    assert [call_id for _, call_id in calls] == ["call-9", "call-9"]


def test_signed_input_is_still_validated_against_the_schema(helper_client: FlaskClient, calls: list[Any]) -> None:
    raw = json.dumps({"input": {"text": "hi", "session_id": "api:bob"}, "context": {}})
    response = invoke(helper_client, raw, sign_headers(SECRET, "c3", raw))
    assert response.status_code == 422 and "fields" in response.get_json()
    assert calls == []
