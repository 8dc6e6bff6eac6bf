"""The operator's routes (``/v1/status``, ``/status``, ``/metrics``) list every person's message ids and dead
letters: only the operator reads them (issue 17). Without ``OPERATOR_TOKEN``: loopback only, never through a
proxy; with it: Bearer (Prometheus) or Basic with the token as password (a browser's prompt)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

ROUTES = ["/v1/status", "/status", "/metrics"]
TOKEN = "op-token-for-tests"


def basic(password: str, user: str = "operator") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("route", ROUTES)
def test_without_a_token_only_a_direct_loopback_caller_is_let_in(make_app: Any, route: str) -> None:
    client = make_app().test_client()
    assert client.get(route).status_code == 200
    remote = client.get(route, environ_overrides={"REMOTE_ADDR": "203.0.113.7"})
    assert remote.status_code == 403 and "OPERATOR_TOKEN" in remote.get_json()["error"]
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):  # a proxy on the same host: not the operator
        assert client.get(route, headers={header: "203.0.113.7"}).status_code == 403
    assert client.get(route, environ_overrides={"REMOTE_ADDR": "::ffff:127.0.0.1"}).status_code == 200


@pytest.mark.parametrize("route", ROUTES)
def test_with_a_token_every_caller_must_present_it(make_app: Any, route: str) -> None:
    client = make_app(operator_token=TOKEN).test_client()
    refused = client.get(route)
    assert refused.status_code == 401 and "operator token" in refused.get_json()["error"]
    assert refused.headers["WWW-Authenticate"].startswith('Basic realm="Switchboard operator"')
    for wrong in ({"Authorization": "Bearer nope"}, basic("nope"), {"Authorization": "Basic !!!"},
                  {"Authorization": f"Token {TOKEN}"}, basic("", user=TOKEN)):
        assert client.get(route, headers=wrong).status_code == 401
    assert client.get(route, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get(route, headers=basic(TOKEN)).status_code == 200
    remote = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get(route, headers=basic(TOKEN), environ_overrides=remote).status_code == 200


def test_the_message_ids_of_dead_letters_are_not_public(make_app: Any, fake_redis: Any) -> None:
    """The reproduction: an unauthenticated /v1/status listed recent dead letters with their message ids."""
    from redis_stores.deadletters import DeadLetters
    from tasks.keys import Keys

    DeadLetters(fake_redis, Keys("sec")).add("poison", "m-secret-id", "boom")
    client = make_app().test_client()
    stranger = client.get("/v1/status", environ_overrides={"REMOTE_ADDR": "198.51.100.2"})
    assert stranger.status_code == 403 and "m-secret-id" not in stranger.get_data(as_text=True)
    assert "m-secret-id" in client.get("/v1/status").get_data(as_text=True)  # the operator, on loopback
