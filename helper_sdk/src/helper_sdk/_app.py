"""The helper's WSGI app: verify the core's signature first, then validate, call, validate, answer.

Every answer is JSON, including werkzeug's own 404/405/413. All exception to
status mapping happens in ``_invoke`` below and nowhere else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug.exceptions import HTTPException

from ._capability import Capability, InvocationContext
from ._errors import HelperError
from ._schemas import InvalidData

if TYPE_CHECKING:
    from ._helper import Helper

__all__ = ["SecretSource", "build_app", "secret_getter"]

log = logging.getLogger("helper_sdk")

SecretSource = str | Callable[[], str | None] | None
NOT_REGISTERED_RETRY_AFTER = 5
DEFAULT_RETRY_AFTER = 30
NO_MESSAGE = "the helper could not do that"  # a HelperError without a message still says something


def secret_getter(secret: SecretSource) -> Callable[[], str | None]:
    """Normalize what create_app accepts: a fixed secret (tests), a callable (the lifecycle), or nothing yet."""
    if secret is None:
        return lambda: None
    if isinstance(secret, str):
        try:
            Webhook(secret)  # fail now on a malformed secret, not at the first call
        except Exception:
            raise ValueError("secret must be a whsec_… string holding base64 key bytes") from None
        return lambda: secret
    if callable(secret):
        return secret
    raise TypeError("secret must be a whsec_… string, a callable returning one (or None), or None")


def build_app(helper: Helper, secret: SecretSource) -> Flask:
    current_secret = secret_getter(secret)
    app = Flask("helper_sdk")
    app.config["MAX_CONTENT_LENGTH"] = helper.max_request_bytes

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok", registered=bool(current_secret()))

    @app.get("/capabilities")
    def capabilities() -> Response:
        return jsonify(
            name=helper.name,
            version=helper.version,
            capabilities=[cap.manifest() for cap in helper.capabilities.values()],
        )

    @app.post("/invoke/<capability>")
    def invoke(capability: str) -> Response:
        return _invoke(helper, capability, current_secret())

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        response = _error(error.code or 500, (error.name or "error").lower())
        if error.code == 405 and getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    return app


def _helper_error(error: HelperError) -> Response:
    """A HelperError as the error body the core reads (docs/helpers.md, "The error body")."""
    retry_after = getattr(error, "retry_after", DEFAULT_RETRY_AFTER) if error.status == 503 else None
    return _error(error.status, error.message, fields=error.fields, retry_after=retry_after)


def _error(
    status: int, message: str, *, fields: Mapping[str, Any] | None = None, retry_after: int | None = None
) -> Response:
    """Every error answer: ``{"error": "<one line for a person>", "fields"?: {...}}`` (the core's contract)."""
    body: dict[str, Any] = {"error": " ".join(str(message).split()) or NO_MESSAGE}
    if fields:
        body["fields"] = json.loads(json.dumps(fields, default=str))  # always sendable, whatever the helper put in
    response = jsonify(body)
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _invoke(helper: Helper, name: str, secret: str | None) -> Response:
    body = request.get_data(cache=False)
    if not secret:
        return _error(503, "not registered with the core yet", retry_after=NOT_REGISTERED_RETRY_AFTER)
    try:
        webhook = Webhook(secret)
    except Exception:
        log.error("the current secret is malformed; answering 503 until the next registration")
        return _error(503, "not registered with the core yet", retry_after=NOT_REGISTERED_RETRY_AFTER)
    try:
        webhook.verify(body, dict(request.headers), json_parse=False)
    except (WebhookVerificationError, ValueError):  # ValueError: undecodable body or a mangled signature header
        return _error(401, "invalid or missing signature")
    capability = helper.capabilities.get(name)
    if capability is None:
        return _error(404, f"unknown capability {name!r}")
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except ValueError:
        return _error(400, "the body is not JSON")
    if not isinstance(payload, dict) or not isinstance(payload.get("input"), dict):
        return _error(400, 'the body must be {"input": {...}, "context": {...}}')
    raw_context = payload.get("context") or {}
    if not isinstance(raw_context, dict):
        return _error(400, '"context" must be an object')
    context = InvocationContext(
        call_id=request.headers["webhook-id"],
        capability=capability.name,
        message_id=_text(raw_context.get("message_id")),
        session_id=_text(raw_context.get("session_id")),
        channel=_text(raw_context.get("channel")),
        raw=raw_context,
    )
    try:
        data = capability.input.load(payload["input"])
    except InvalidData as invalid:
        return _error(422, "invalid input", fields=invalid.fields)
    except HelperError as error:  # raised by a post_load hook or custom validator: the helper's own answer
        return _helper_error(error)
    except Exception:  # a post_load hook or custom validator of the helper failed
        log.exception("capability %s: loading the input failed (call %s)", capability.name, context.call_id)
        return _error(500, "internal error")
    return _call(capability, data, context)


def _call(capability: Capability, data: Any, context: InvocationContext) -> Response:
    try:
        result = capability.handler(data, context)
    except HelperError as error:
        return _helper_error(error)
    except Exception:
        log.exception("capability %s failed (call %s)", capability.name, context.call_id)
        return _error(500, "internal error")
    try:
        if not isinstance(result, Mapping):
            raise InvalidData({"_schema": [f"expected a mapping, got {type(result).__name__}"]})
        output = capability.output.dump(dict(result))
        body = json.dumps({"output": output}, allow_nan=False, ensure_ascii=False)
    except HelperError as error:  # a field's own dump decided the call cannot be answered
        return _helper_error(error)
    except InvalidData as invalid:
        log.error("capability %s returned output its output schema rejects: %s", capability.name, invalid.fields)
        return _error(500, "the helper returned invalid output")
    except Exception:  # not JSON (a set, NaN), or a field's own dump failed
        log.exception("capability %s returned output that cannot be sent", capability.name)
        return _error(500, "the helper returned invalid output")
    return Response(body, status=200, mimetype="application/json")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text(value: Any) -> str:
    return "" if value is None else str(value)
