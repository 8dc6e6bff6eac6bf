from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from edge.app import create_app
from redis_stores.helper_registry import HelperRegistry, NameTaken
from tasks.keys import Keys
from tasks.settings import Settings
from tests.support.edge import EdgeApp, RecordingCelery
from tests.support.factories import manifest

TOKEN = "registration-token"


@pytest.fixture
def client(edge_app: EdgeApp) -> Iterator[FlaskClient]:
    app = edge_app(key_prefix="test", helper_registration_token=TOKEN, helper_heartbeat_interval=5)
    with app.test_client() as test_client:
        yield test_client


def register(client: FlaskClient, body: dict[str, Any] | None = None, token: str = TOKEN, secret: str = "") -> Any:
    headers = {"Authorization": f"Bearer {token}", **({"X-Helper-Secret": secret} if secret else {})}
    return client.post("/v1/helpers", json=body or manifest(), headers=headers)


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


def test_a_held_name_is_renewed_or_changed_only_with_the_live_helpers_secret(client: FlaskClient) -> None:
    # Issue 17: re-registering `calculator` at the real helper's URL got a new secret, and DELETE with it removed it.
    first = register(client).get_json()["secret"]
    for attempt in (register(client), register(client, manifest(url="http://127.0.0.1:9999")),
                    register(client, secret="whsec_" + "A" * 32)):
        assert attempt.status_code == 409, attempt.get_json()
        assert "X-Helper-Secret" in attempt.get_json()["error"]
        assert 1 <= int(attempt.headers["Retry-After"]) <= 15  # when the held registration expires
    heartbeat = "/v1/helpers/calculator/heartbeat"
    assert client.put(heartbeat, headers={"Authorization": f"Bearer {first}"}).status_code == 200  # still its own
    moved = register(client, manifest(url="http://127.0.0.1:9999", version="2.0.0"), secret=first)
    assert moved.status_code == 201 and (second := moved.get_json()["secret"]) != first
    assert client.get("/v1/helpers").get_json()["helpers"][0]["url"] == "http://127.0.0.1:9999"
    assert client.put(heartbeat, headers={"Authorization": f"Bearer {first}"}).status_code == 401  # superseded
    assert client.delete("/v1/helpers/calculator", headers={"Authorization": f"Bearer {first}"}).status_code == 401
    assert client.delete("/v1/helpers/calculator", headers={"Authorization": f"Bearer {second}"}).status_code == 204


def test_a_name_no_live_helper_holds_is_free_again(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    register(client)
    fake_redis.delete(Keys("test").helper("calculator"))  # expired: its helper stopped heartbeating
    assert register(client).status_code == 201


def test_two_registrations_racing_for_a_free_name_cannot_both_win(fake_redis: fakeredis.FakeRedis, keys: Keys) -> None:
    registry = HelperRegistry(fake_redis, keys, heartbeat_interval=5, missed_heartbeats=3,
                              failure_threshold=1, reset_seconds=60)
    registry.register(manifest(), "whsec_a")
    with pytest.raises(NameTaken) as taken:
        registry.register(manifest(url="http://127.0.0.1:9"), "whsec_b")
    assert taken.value.retry_after >= 1 and registry.secret("calculator") == "whsec_a"
    registry.register(manifest(url="http://127.0.0.1:9"), "whsec_c", current_secret="whsec_a")
    registry.register(manifest(), "whsec_d", owner=True)
    assert registry.secret("calculator") == "whsec_d"


@pytest.fixture
def own_tokens(settings: Settings, fake_redis: fakeredis.FakeRedis) -> Iterator[FlaskClient]:
    app = create_app(
        settings.replace(key_prefix="test", helper_registration_token=TOKEN, helper_tokens="calculator=calc-own"),
        client=fake_redis, celery=RecordingCelery(fake_redis),
    )
    with app.test_client() as test_client:
        yield test_client


def test_a_helper_with_its_own_token_registers_only_with_it_and_may_take_its_name_back(
    own_tokens: FlaskClient,
) -> None:
    refused = register(own_tokens)  # the shared token no longer registers a name HELPER_TOKENS lists
    assert refused.status_code == 401 and "HELPER_TOKENS" in refused.get_json()["error"]
    first = register(own_tokens, token="calc-own")
    assert first.status_code == 201
    restarted = register(own_tokens, token="calc-own")  # lost its secret: its own token proves who it is
    assert restarted.status_code == 201 and restarted.get_json()["secret"] != first.get_json()["secret"]
    other = manifest(name="weather")
    assert register(own_tokens, other, token="calc-own").status_code == 401  # one helper's token is not another's
    assert register(own_tokens, other).status_code == 201


def test_registration_without_any_token_is_refused_before_the_body_is_read(own_tokens: FlaskClient) -> None:
    response = own_tokens.post("/v1/helpers", data="not json", headers={"Content-Type": "text/plain"})
    assert response.status_code == 401 and "token" in response.get_json()["error"]


@pytest.mark.parametrize("patterns", [["image/*"], ["text/plain", "application/*"]])
def test_accepts_lists_concrete_types_unless_the_operator_allows_patterns(
    client: FlaskClient, settings: Settings, fake_redis: fakeredis.FakeRedis, patterns: list[str]
) -> None:
    # Issue 17: a helper declaring `accepts: ["*/*"]` was handed everyone's uploads.
    body = manifest(capabilities=[{**manifest()["capabilities"][0], "accepts": patterns}])
    response = register(client, body)
    assert response.status_code == 400
    assert "HELPER_WILDCARD_ACCEPTS" in json.dumps(response.get_json()["fields"]["capabilities"])
    allowed = create_app(
        settings.replace(key_prefix="test2", helper_registration_token=TOKEN, helper_wildcard_accepts=True),
        client=fake_redis, celery=RecordingCelery(fake_redis),
    )
    assert register(allowed.test_client(), body).status_code == 201
    everything = manifest(capabilities=[{**manifest()["capabilities"][0], "accepts": ["*/*"]}])
    assert register(allowed.test_client(), everything).status_code == 400  # never a type any helper may claim


def test_accepts_is_capped_in_length(client: FlaskClient) -> None:
    many = [f"application/x-type{i}" for i in range(33)]
    response = register(client, manifest(capabilities=[{**manifest()["capabilities"][0], "accepts": many}]))
    assert response.status_code == 400 and "capabilities" in response.get_json()["fields"]


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
    registry.register(manifest(), "whsec_b", current_secret="whsec_a")
    assert registry.allow_call("calculator")
    assert registry.get("calculator").health["recent_failures"] == 1  # type: ignore[union-attr]
