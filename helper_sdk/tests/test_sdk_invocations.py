"""Calls from the core: signature first, then input, the capability, output — and a JSON answer every time."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from marshmallow import Schema, fields, post_load

from helper_sdk import Helper, HelperError, InvocationContext
from helper_sdk.testing import HelperClient, new_secret, signed_invocation
from sdk_sample_helper import MODES


@pytest.fixture
def client(sample_client: HelperClient) -> FlaskClient:
    return sample_client.client


def post(client: FlaskClient, secret: str, capability: str, data: dict[str, Any], **kwargs: Any) -> Any:
    path, body, headers = signed_invocation(secret, capability, data, **kwargs)
    return client.post(path, data=body, headers=headers)


def test_a_signed_call_gets_the_output(sample_client: HelperClient) -> None:
    response = sample_client.invoke("echo", {"message": "hi", "times": 3})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json == {"output": {"text": "hi hi hi"}}


def test_the_capability_sees_the_context(client: FlaskClient, secret: str) -> None:
    context = {"message_id": "m-1", "session_id": "sms:+15550001", "channel": "sms", "later": "kept"}
    response = post(client, secret, "whoami", {}, context=context, call_id="call-42")
    output = response.json["output"]
    assert output["call_id"] == "call-42"
    assert (output["message_id"], output["session_id"], output["channel"]) == ("m-1", "sms:+15550001", "sms")
    assert output["capability"] == "whoami"


def test_an_unsigned_call_is_refused(client: FlaskClient) -> None:
    response = client.post("/invoke/echo", json={"input": {"message": "hi"}, "context": {}})
    assert response.status_code == 401
    assert response.json == {"error": "invalid or missing signature"}


def test_a_call_signed_with_another_secret_is_refused(client: FlaskClient) -> None:
    assert post(client, new_secret(), "echo", {"message": "hi"}).status_code == 401


def test_a_stale_call_is_refused(client: FlaskClient, secret: str) -> None:
    stale = datetime.now(UTC) - timedelta(minutes=6)
    assert post(client, secret, "echo", {"message": "hi"}, timestamp=stale).status_code == 401


def test_a_tampered_body_is_refused(client: FlaskClient, secret: str) -> None:
    path, body, headers = signed_invocation(secret, "echo", {"message": "hi"})
    response = client.post(path, data=body.replace(b"hi", b"ho"), headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize("signature", ["garbage", "v1,not-base64!!", "v1", ""])
def test_a_mangled_signature_header_is_a_401_not_a_crash(client: FlaskClient, secret: str, signature: str) -> None:
    path, body, headers = signed_invocation(secret, "echo", {"message": "hi"})
    response = client.post(path, data=body, headers={**headers, "webhook-signature": signature})
    assert response.status_code == 401


def test_a_body_that_is_not_utf8_is_a_401(client: FlaskClient, secret: str) -> None:
    path, _, headers = signed_invocation(secret, "echo", {"message": "hi"})
    assert client.post(path, data=b"\xff\xfe", headers=headers).status_code == 401


def test_calls_before_registration_get_503_with_retry_after(sample_helper: Helper) -> None:
    client = sample_helper.create_app(secret=lambda: None).test_client()
    path, body, headers = signed_invocation(new_secret(), "echo", {"message": "hi"})
    response = client.post(path, data=body, headers=headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json == {"error": "not registered with the core yet"}


def test_the_app_follows_the_current_secret(sample_helper: Helper) -> None:
    current = {"secret": new_secret()}
    client = sample_helper.create_app(secret=lambda: current["secret"]).test_client()
    old = current["secret"]
    current["secret"] = new_secret()
    assert post(client, old, "echo", {"message": "hi"}).status_code == 401
    assert post(client, current["secret"], "echo", {"message": "hi"}).status_code == 200


def test_an_unknown_capability_is_a_404(client: FlaskClient, secret: str) -> None:
    response = post(client, secret, "nope", {})
    assert response.status_code == 404
    assert response.json == {"error": "unknown capability 'nope'"}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "the body is not JSON"),
        (b'{"input": NaN}', "the body is not JSON"),
        (b"[1]", 'the body must be {"input": {...}, "context": {...}}'),
        (b'{"input": 3}', 'the body must be {"input": {...}, "context": {...}}'),
        (b'{"input": {}, "context": 3}', '"context" must be an object'),
    ],
)
def test_a_malformed_envelope_is_a_400(client: FlaskClient, secret: str, body: bytes, error: str) -> None:
    from standardwebhooks.webhooks import Webhook

    now = datetime.now(UTC)
    headers = {
        "webhook-id": "c1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign("c1", now, body.decode()),
    }
    response = client.post("/invoke/echo", data=body, headers=headers)
    assert response.status_code == 400
    assert response.json == {"error": error}


def test_invalid_input_is_a_422_with_field_errors(sample_client: HelperClient) -> None:
    response = sample_client.invoke("echo", {"message": "", "times": 9, "loud": True})
    assert response.status_code == 422
    assert response.json == {
        "error": "invalid input",
        "fields": {
            "message": ["Length must be between 1 and 100."],
            "times": ["Must be greater than or equal to 1 and less than or equal to 5."],
            "loud": ["Unknown field."],
        },
    }


def test_invalid_input_against_a_json_schema_is_a_422_too(sample_client: HelperClient) -> None:
    response = sample_client.invoke("behave", {"mode": "dance"})
    assert response.status_code == 422
    assert response.json["fields"] == {"mode": ["Must be one of: " + ", ".join(json.dumps(m) for m in MODES) + "."]}


def test_field_errors_inside_lists_are_keyed_by_index(sample_helper: Helper) -> None:
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
    }
    helper = Helper("h")
    helper.capability(input_schema=schema, output_schema={"type": "object"}, name="tag", description="d")(
        lambda data, context: {}
    )
    response = HelperClient(helper).invoke("tag", {"tags": ["a", "b", 3]})
    assert response.status_code == 422
    assert response.json["fields"] == {
        "tags": {"2": ["Not a valid string."], "_schema": ["Must have at most 2 items."]}
    }


def test_a_failing_post_load_hook_is_a_logged_500(caplog: pytest.LogCaptureFixture) -> None:
    class Strict(Schema):
        n = fields.Integer()

        @post_load
        def explode(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            raise KeyError("bug")

    helper = Helper("h")
    helper.capability(input_schema=Strict, output_schema={"type": "object"}, name="go", description="d")(
        lambda data, context: {}
    )
    with caplog.at_level(logging.ERROR, logger="helper_sdk"):
        response = HelperClient(helper).invoke("go", {"n": 1})
    assert (response.status_code, response.json) == (500, {"error": "internal error"})
    assert "loading the input failed" in caplog.text


def test_a_helper_error_is_answered_with_its_status(sample_client: HelperClient) -> None:
    response = sample_client.invoke("behave", {"mode": "helper_error"})
    assert response.status_code == 404
    assert response.json == {"error": "no such city", "fields": {"city": ["unknown"]}}


def test_a_helper_error_from_a_schema_hook_is_answered_like_one_from_the_capability() -> None:
    class Expression(Schema):
        text = fields.String(required=True)

        @post_load
        def parse(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            if data["text"] == "1/0":
                raise HelperError("division by zero", fields={"text": ["cannot divide by zero"]})
            return data

    helper = Helper("h")
    helper.capability(input_schema=Expression, output_schema={"type": "object"}, name="go", description="d")(
        lambda data, context: {}
    )
    response = HelperClient(helper).invoke("go", {"text": "1/0"})
    assert (response.status_code, response.json) == (
        422, {"error": "division by zero", "fields": {"text": ["cannot divide by zero"]}})


def test_every_helper_error_gets_the_error_body_the_core_reads() -> None:
    helper = Helper("h")
    errors = iter([HelperError(""), HelperError("two\nlines", status=409), HelperError("odd", fields={"n": {1, 2}})])

    @helper.capability(input_schema={"type": "object"}, output_schema={"type": "object"}, name="go", description="d")
    def go(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
        raise next(errors)

    client = HelperClient(helper)
    answers = [client.invoke("go", {}) for _ in range(3)]
    assert [(a.status_code, a.json) for a in answers] == [
        (422, {"error": "the helper could not do that"}),  # never an empty message for a person
        (409, {"error": "two lines"}),  # one line
        (422, {"error": "odd", "fields": {"n": "{1, 2}"}}),  # fields that are not JSON are sent as text
    ]


def test_unavailable_is_a_503_with_retry_after(sample_client: HelperClient) -> None:
    response = sample_client.invoke("behave", {"mode": "unavailable"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.json == {"error": "weather service down"}


def test_a_crash_is_a_logged_500_without_details(sample_client: HelperClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="helper_sdk"):
        response = sample_client.invoke("behave", {"mode": "crash"})
    assert response.status_code == 500
    assert response.json == {"error": "internal error"}
    assert "secret internals" not in response.text
    assert "capability behave failed" in caplog.text
    assert "secret internals" in caplog.text


@pytest.mark.parametrize("mode", ["bad_output", "not_json", "not_mapping"])
def test_output_the_schema_rejects_is_the_helpers_bug(sample_client: HelperClient, mode: str) -> None:
    response = sample_client.invoke("behave", {"mode": mode})
    assert response.status_code == 500
    assert response.json == {"error": "the helper returned invalid output"}


def test_a_direct_reply_without_text_never_reaches_the_person() -> None:
    class Out(Schema):
        text = fields.String(required=True)

    helper = Helper("h")

    @helper.capability(input_schema={"type": "object"}, output_schema=Out, reply="direct")
    def speak(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
        """Say something."""
        return data

    client = HelperClient(helper)
    assert client.invoke("speak", {"text": "hello"}).json == {"output": {"text": "hello"}}
    assert client.invoke("speak", {}).status_code == 500
    assert client.invoke("speak", {"text": 5}).status_code == 500


def test_capabilities_and_health_are_public(client: FlaskClient, sample_helper: Helper) -> None:
    capabilities = client.get("/capabilities")
    assert capabilities.status_code == 200
    assert capabilities.json == {
        "name": "sample",
        "version": "1.2.3",
        "capabilities": sample_helper.manifest("http://x")["capabilities"],
    }
    assert client.get("/healthz").json == {"status": "ok", "registered": True}
    unregistered = sample_helper.create_app().test_client()
    assert unregistered.get("/healthz").json == {"status": "ok", "registered": False}


def test_errors_from_the_framework_are_json_too(client: FlaskClient, secret: str) -> None:
    missing = client.get("/nowhere")
    assert (missing.status_code, missing.json) == (404, {"error": "not found"})
    wrong_method = client.get("/invoke/echo")
    assert (wrong_method.status_code, wrong_method.json) == (405, {"error": "method not allowed"})
    assert "POST" in wrong_method.headers["Allow"]
    path, _, headers = signed_invocation(secret, "echo", {"message": "hi"})
    too_big = client.post(path, data=b"x" * (1024 * 1024 + 1), headers=headers)
    assert too_big.status_code == 413
    assert too_big.content_type == "application/json"


def test_a_malformed_fixed_secret_is_refused_up_front(sample_helper: Helper) -> None:
    with pytest.raises(ValueError):
        sample_helper.create_app(secret="whsec_!!!")
