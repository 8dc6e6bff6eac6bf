from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from edge.app import create_app
from tasks.helpers import HelperRegistry
from tasks.keys import Keys
from tasks.settings import Settings
from tests.unit.test_edge_api import RecordingCelery

TOKEN = "registration-token"


def manifest(**overrides: Any) -> dict[str, Any]:
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


@pytest.fixture
def client(settings: Settings, fake_redis: fakeredis.FakeRedis) -> Iterator[FlaskClient]:
    app = create_app(
        settings.replace(key_prefix="test", helper_registration_token=TOKEN, helper_heartbeat_interval=5),
        client=fake_redis, celery=RecordingCelery(fake_redis),
    )
    with app.test_client() as test_client:
        yield test_client


def register(client: FlaskClient, body: dict[str, Any] | None = None, token: str = TOKEN) -> Any:
    return client.post("/v1/helpers", json=body or manifest(), headers={"Authorization": f"Bearer {token}"})


def test_a_helper_registers_and_gets_a_secret_and_its_heartbeat_interval(client: FlaskClient) -> None:
    response = register(client)
    assert response.status_code == 201
    body = response.get_json()
    assert body["name"] == "calculator" and body["secret"].startswith("whsec_")
    assert (body["heartbeat_interval"], body["expires_in"]) == (5, 15)
    listed = client.get("/v1/helpers").get_json()["helpers"]
    assert [h["name"] for h in listed] == ["calculator"]
    assert listed[0]["health"]["circuit"] == "closed" and "secret" not in listed[0]


def test_a_wrong_token_gets_401(client: FlaskClient) -> None:
    assert register(client, token="nope").status_code == 401
    assert client.post("/v1/helpers", json=manifest()).status_code == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"url": "http://10.9.9.9:80"}, "url"),
        ({"capabilities": []}, "capabilities"),
        ({"capabilities": [{**manifest()["capabilities"][0], "input_schema": {"type": "nonsense"}}]}, "capabilities"),
        ({"capabilities": [{**manifest()["capabilities"][0], "output_schema": {"type": "object"}}]}, "capabilities"),
        ({"capabilities": [{**manifest()["capabilities"][0], "accepts": ["not-a-mime"]}]}, "capabilities"),
    ],
)
def test_a_malformed_manifest_gets_400_naming_the_problem(
    client: FlaskClient, change: dict[str, Any], field: str
) -> None:
    response = register(client, manifest(**change))
    assert response.status_code == 400
    assert field in response.get_json()["fields"]


def test_a_live_name_from_another_url_is_refused_but_the_same_url_re_registers(client: FlaskClient) -> None:
    first = register(client).get_json()["secret"]
    assert register(client, manifest(url="http://127.0.0.1:9999")).status_code == 409
    again = register(client)
    assert again.status_code == 201 and again.get_json()["secret"] != first


def test_heartbeats_need_the_helpers_own_secret_and_get_404_once_expired(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    secret = register(client).get_json()["secret"]
    url = "/v1/helpers/calculator/heartbeat"
    assert client.put(url, headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert client.put(url, headers={"Authorization": "Bearer whsec_other"}).status_code == 401
    fake_redis.delete(Keys("test").helper("calculator"))  # expired, or Redis was flushed
    assert client.put(url, headers={"Authorization": f"Bearer {secret}"}).status_code == 404
    assert client.get("/v1/helpers").get_json()["helpers"] == []


def test_a_helper_can_leave(client: FlaskClient) -> None:
    secret = register(client).get_json()["secret"]
    assert client.delete("/v1/helpers/calculator", headers={"Authorization": f"Bearer {secret}"}).status_code == 204
    assert client.get("/v1/helpers").get_json()["helpers"] == []


def test_the_circuit_opens_after_repeated_failures_and_half_opens_later(
    fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    registry = HelperRegistry(fake_redis, keys, heartbeat_interval=5, missed_heartbeats=3,
                              failure_threshold=2, reset_seconds=0.2)
    assert registry.allow_call("h")
    assert registry.record_failure("h", "timeout") == "closed"
    assert registry.record_failure("h", "timeout") == "open"
    assert not registry.allow_call("h")
    time.sleep(0.25)
    assert registry.allow_call("h")  # the trial call
    assert not registry.allow_call("h")  # only one at a time
    registry.record_success("h")
    assert registry.allow_call("h")


def test_registering_again_closes_an_open_circuit(fake_redis: fakeredis.FakeRedis, keys: Keys) -> None:
    registry = HelperRegistry(fake_redis, keys, heartbeat_interval=5, missed_heartbeats=3,
                              failure_threshold=1, reset_seconds=60)
    registry.register(manifest(), "whsec_a")
    registry.record_failure("calculator", "connection refused")
    assert not registry.allow_call("calculator")
    registry.register(manifest(), "whsec_b")
    assert registry.allow_call("calculator")
    assert registry.get("calculator").health["recent_failures"] == 1  # type: ignore[union-attr]
