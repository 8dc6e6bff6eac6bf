"""Test doubles for helper authors: test a helper without running the core.

- ``HelperClient(helper).invoke("cap", {...})`` — call a capability in-process,
  signed exactly like the core signs (Flask test client, no server).
- ``signed_invocation(secret, "cap", {...})`` — the ``(path, body, headers)``
  of one signed call, for any test client.
- ``FakeCore()`` — a real HTTP server implementing the core's helper registry
  (``POST/PUT/DELETE /v1/helpers…``): run the real ``Lifecycle`` or the CLI
  against it, make it forget a helper (404 on the next heartbeat) or go
  down (503), and ``invoke`` a registered helper over HTTP.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests
from flask import Flask, Response, jsonify, request
from standardwebhooks.webhooks import Webhook
from werkzeug.serving import BaseWSGIServer, make_server

from .manifest import manifest_problems

if TYPE_CHECKING:
    from ._helper import Helper

__all__ = [
    "FakeCore",
    "HelperClient",
    "InvocationResult",
    "RecordedRequest",
    "RegisteredHelper",
    "new_secret",
    "signed_invocation",
]



def new_secret() -> str:
    """A fresh whsec_… secret, like the core hands out."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_invocation(
    secret: str,
    capability: str,
    input: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
    *,
    call_id: str | None = None,
    timestamp: datetime | None = None,
) -> tuple[str, bytes, dict[str, str]]:
    """One core → helper call: ``client.post(path, data=body, headers=headers)``.

    ``timestamp`` lets a test send a stale call; ``context`` entries override
    the test defaults (``message_id``, ``session_id``, ``channel``).
    """
    call_id = call_id or str(uuid.uuid4())
    full_context = {"call_id": call_id, "message_id": "test-message", "session_id": "test:session", "channel": "test"}
    full_context.update(context or {})
    body = json.dumps({"input": dict(input), "context": full_context})
    when = timestamp or datetime.now(UTC)
    headers = {
        "webhook-id": call_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(call_id, when, body),
        "content-type": "application/json",
    }
    return f"/invoke/{capability}", body.encode(), headers


@dataclass(frozen=True)
class InvocationResult:
    """A helper's answer to one call. Every answer is JSON, so ``json`` is never None (``text`` is the raw body)."""

    status_code: int
    json: Any
    headers: Mapping[str, str]
    text: str


class HelperClient:
    """A helper's app with a known secret, and ``invoke`` to call it the way the core does."""

    def __init__(self, helper: Helper, *, secret: str | None = None) -> None:
        self.secret = secret or new_secret()
        self.app = helper.create_app(self.secret)
        self.client = self.app.test_client()

    def invoke(
        self, capability: str, input: Mapping[str, Any], *, context: Mapping[str, Any] | None = None
    ) -> InvocationResult:
        path, body, headers = signed_invocation(self.secret, capability, input, context)
        response = self.client.post(path, data=body, headers=headers)
        return InvocationResult(response.status_code, response.json, dict(response.headers), response.get_data(True))


@dataclass
class RegisteredHelper:
    name: str
    url: str
    secret: str
    manifest: dict[str, Any]
    last_seen: float = field(default_factory=time.monotonic)
    heartbeats: int = 0  # since this registration; the first one shows the helper holds the new secret

    def capability_names(self) -> list[str]:
        return [capability["name"] for capability in self.manifest["capabilities"]]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    status: int
    at: float  # time.monotonic()


class FakeCore:
    """The core's helper registry on a real local port, recording what helpers do to it.

    ``registrations`` (accepted manifests), ``heartbeats`` and
    ``deregistrations`` (helper names) and ``requests`` (everything, with the
    status answered) are lists you can assert on. It validates manifests and
    answers 401/400/404/409/503 the way the contract says the core does: a
    live name is renewed only with its current secret in ``X-Helper-Secret``
    (else 409 with Retry-After), and ``accepts`` patterns need
    ``wildcard_accepts``.
    """

    def __init__(
        self,
        *,
        token: str = "test-registration-token",
        heartbeat_interval: float = 30.0,
        expires_in: float | None = None,
        wildcard_accepts: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.wildcard_accepts = wildcard_accepts  # the core's HELPER_WILDCARD_ACCEPTS
        self.heartbeat_interval = heartbeat_interval
        self.expires_in = expires_in if expires_in is not None else 3 * heartbeat_interval
        self.available = True  # False: every registry route answers 503, as a core without Redis does
        self.helpers: dict[str, RegisteredHelper] = {}
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats: list[str] = []
        self.deregistrations: list[str] = []
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # --- running ---

    def start(self) -> FakeCore:
        server = self._server = make_server(self._host, self._port, self._app(), threaded=True)
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name="fake-core", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeCore:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeCore is not started")
        return f"http://{self._host}:{self._server.server_port}"

    # --- steering ---

    def forget(self, name: str) -> None:
        """Drop a helper as an expiry or a core restart would: its next heartbeat gets 404."""
        with self._lock:
            self.helpers.pop(name, None)

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
        """Poll ``predicate`` until it is true; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"FakeCore: timed out after {timeout}s waiting for {what}")
            time.sleep(0.01)

    def wait_for_registration(self, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for the ``count``-th accepted registration and return its manifest."""
        self.wait_until(lambda: len(self.registrations) >= count, timeout, f"registration #{count}")
        return self.registrations[count - 1]

    def wait_until_ready(self, name: str, timeout: float = 5.0) -> RegisteredHelper:
        """Wait until ``name`` is registered and has heartbeated since: it holds its secret, calls will verify."""

        def ready() -> bool:
            with self._lock:
                registered = self.helpers.get(name)
                return registered is not None and registered.heartbeats > 0

        self.wait_until(ready, timeout, f"{name!r} to register and heartbeat")
        return self.helpers[name]

    def invoke(
        self,
        capability: str,
        input: Mapping[str, Any],
        *,
        helper: str | None = None,
        context: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
    ) -> requests.Response:
        """Call a registered helper over HTTP, signed with its current secret, as the core does."""
        target = self._target(capability, helper)
        path, body, headers = signed_invocation(target.secret, capability, input, context)
        return requests.post(target.url + path, data=body, headers=headers, timeout=timeout, allow_redirects=False)

    def _target(self, capability: str, name: str | None) -> RegisteredHelper:
        with self._lock:
            if name is not None:
                return self.helpers[name]
            for registered in self.helpers.values():
                if capability in registered.capability_names():
                    return registered
        raise LookupError(f"no registered helper offers {capability!r}")

    # --- the registry routes ---

    def _app(self) -> Flask:
        app = Flask("helper_sdk.testing")

        @app.before_request
        def unavailable() -> Response | None:
            return None if self.available else _answer(503, {"error": "core unavailable"})

        @app.after_request
        def record(response: Response) -> Response:
            with self._lock:
                self.requests.append(
                    RecordedRequest(request.method, request.path, response.status_code, time.monotonic())
                )
            return response

        @app.post("/v1/helpers")
        def register() -> Response:
            if not _bearer_is(self.token):
                return _answer(401, {"error": "bad registration token"})
            body = request.get_json(silent=True)
            problems = manifest_problems(body, wildcard_accepts=self.wildcard_accepts)
            if problems:
                return _answer(400, {"error": "malformed manifest", "fields": problems})
            assert isinstance(body, dict)
            with self._lock:
                current = self.helpers.get(body["name"])
                proof = request.headers.get("X-Helper-Secret", "").encode()
                held = current is not None and self._alive(current)
                if current is not None and held and not hmac.compare_digest(proof, current.secret.encode()):
                    left = max(1, math.ceil(self.expires_in - (time.monotonic() - current.last_seen)))
                    answer = _answer(409, {"error": f"a live helper holds the name {body['name']!r}: renew it with "
                                                    "its current secret (X-Helper-Secret) or wait until it expires"})
                    answer.headers["Retry-After"] = str(left)
                    return answer
                secret = new_secret()
                self.helpers[body["name"]] = RegisteredHelper(body["name"], body["url"], secret, body)
                self.registrations.append(body)
            return _answer(
                201,
                {
                    "name": body["name"],
                    "secret": secret,
                    "heartbeat_interval": self.heartbeat_interval,
                    "expires_in": self.expires_in,
                },
            )

        @app.put("/v1/helpers/<name>/heartbeat")
        def heartbeat(name: str) -> Response:
            with self._lock:
                found = self._authorized(name)
                if isinstance(found, Response):
                    return found
                found.last_seen = time.monotonic()
                found.heartbeats += 1
                self.heartbeats.append(name)
            return _answer(200, {"heartbeat_interval": self.heartbeat_interval, "expires_in": self.expires_in})

        @app.delete("/v1/helpers/<name>")
        def leave(name: str) -> Response:
            with self._lock:
                found = self._authorized(name)
                if isinstance(found, Response):
                    return found
                del self.helpers[name]
                self.deregistrations.append(name)
            return Response(status=204)

        @app.get("/v1/helpers")
        def listing() -> Response:
            with self._lock:
                return _answer(200, {"helpers": [h.manifest for h in self.helpers.values()]})

        return app

    def _alive(self, registered: RegisteredHelper) -> bool:
        return time.monotonic() - registered.last_seen <= self.expires_in

    def _authorized(self, name: str) -> RegisteredHelper | Response:
        registered = self.helpers.get(name)
        if registered is None or not self._alive(registered):
            self.helpers.pop(name, None)
            return _answer(404, {"error": f"unknown helper {name!r}: register again"})
        if not _bearer_is(registered.secret):
            return _answer(401, {"error": "bad helper secret"})
        return registered


def _answer(status: int, body: Any) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _bearer_is(expected: str) -> bool:
    given = request.headers.get("Authorization", "")
    return bool(expected) and hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())
