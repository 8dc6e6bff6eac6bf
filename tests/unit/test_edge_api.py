from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from edge.app import create_app
from tasks.keys import Keys
from tasks.names import HANDLE_MESSAGE
from tasks.settings import Settings
from tests.support.edge import EdgeApp, RecordingCelery
from tests.support.factories import keyed


@pytest.fixture
def client(edge_app: EdgeApp) -> Iterator[FlaskClient]:
    with keyed(edge_app(key_prefix="test", max_text_chars=100).test_client()) as test_client:
        yield test_client


def test_a_message_is_accepted_queued_and_its_task_sent(
    client: FlaskClient, celery_app: RecordingCelery, fake_redis: fakeredis.FakeRedis
) -> None:
    response = client.post("/v1/messages", json={"user": "alice", "text": "hi", "reply_url": "http://127.0.0.1:9/cb"})
    assert response.status_code == 202
    body = response.get_json()
    assert body["session_id"] == "api:tests:alice"
    assert body["status_url"].endswith(f"/v1/messages/{body['message_id']}")
    assert celery_app.sent == [(HANDLE_MESSAGE, [body["message_id"], "api:tests:alice"])]
    status = client.get(f"/v1/messages/{body['message_id']}").get_json()
    assert status == {"message_id": body["message_id"], "session_id": "api:tests:alice", "status": "queued",
                      "reply": None}
    assert fake_redis.lrange(Keys("test").session_inbox("api:tests:alice"), 0, -1) == [body["message_id"]]


def test_attachments_by_reference_are_carried_in_the_envelope(client: FlaskClient) -> None:
    body = {"user": "alice", "text": "count this",
            "attachments": [{"url": "http://127.0.0.1:9/files/notes.txt", "mime": "text/plain", "size": 12}]}
    message_id = client.post("/v1/messages", json=body).get_json()["message_id"]
    record = client.application.extensions["switchboard"].messages.get(message_id)
    assert record.envelope["attachments"] == [
        {"mime": "text/plain", "size": 12, "name": "notes.txt", "url": "http://127.0.0.1:9/files/notes.txt"}
    ]


def test_an_attachment_outside_the_allowed_hosts_is_refused(client: FlaskClient) -> None:
    body = {"user": "alice", "text": "x", "attachments": [{"url": "http://10.1.1.1/a.txt", "mime": "text/plain"}]}
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 400 and "attachments" in response.get_json()["fields"]


def test_a_named_session_is_namespaced_by_its_user(client: FlaskClient) -> None:
    response = client.post("/v1/messages", json={"user": "bob", "text": "hi", "session": "trip"})
    assert response.get_json()["session_id"] == "api:tests:bob#trip"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "hi"}, "user"),
        ({"user": "alice"}, "text"),
        ({"user": "alice", "text": ""}, "text"),
        ({"user": "alice", "text": "x" * 101}, "text"),
        ({"user": "a b", "text": "hi"}, "user"),
        ({"user": "alice", "text": "hi", "reply_url": "not a url"}, "reply_url"),
        ({"user": "alice", "text": "hi", "reply_url": "http://10.0.0.1/cb"}, "reply_url"),
        ({"user": "alice", "text": "hi", "extra": 1}, "extra"),
    ],
)
def test_invalid_fields_get_400_naming_them(client: FlaskClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 400
    assert field in response.get_json()["fields"]


def test_metadata_past_max_metadata_bytes_gets_400_and_nothing_is_stored(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    # Issue 17: a 1 MB metadata object became a 1.67 MB record kept for 7 days.
    fits = {"note": "x" * 4000}
    assert client.post("/v1/messages", json={"user": "alice", "text": "hi", "metadata": fits}).status_code == 202
    before = fake_redis.dbsize()
    for metadata in ({"note": "x" * 4100}, {"blob": "y" * 1_000_000}, {"é": "é" * 2100}):  # bytes, not characters
        response = client.post("/v1/messages", json={"user": "alice", "text": "hi", "metadata": metadata})
        assert response.status_code in (400, 413), response.get_json()
        if response.status_code == 400:
            assert "MAX_METADATA_BYTES" in response.get_json()["fields"]["metadata"][0]
    assert fake_redis.dbsize() == before


def test_malformed_json_gets_400(client: FlaskClient) -> None:
    response = client.post("/v1/messages", data="{nope", content_type="application/json")
    assert response.status_code == 400 and "error" in response.get_json()


def test_a_body_that_is_not_json_gets_415(client: FlaskClient) -> None:
    response = client.post("/v1/messages", data="user=alice", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_a_body_over_the_limit_gets_413(settings: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    app = create_app(settings.replace(max_body_bytes=1000), client=fake_redis, celery=RecordingCelery(fake_redis))
    response = keyed(app.test_client()).post("/v1/messages", json={"user": "alice", "text": "x" * 2000})
    assert response.status_code == 413 and response.get_json() == {"error": "request body is too large"}


def test_the_same_idempotency_key_returns_the_first_message(client: FlaskClient, celery_app: RecordingCelery) -> None:
    first = client.post("/v1/messages", json={"user": "alice", "text": "hi"}, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/messages", json={"user": "alice", "text": "hi"}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["message_id"] == first.get_json()["message_id"]
    assert len(celery_app.sent) == 1


def test_a_broker_failure_gets_503_and_leaves_nothing_behind(
    client: FlaskClient, celery_app: RecordingCelery, fake_redis: fakeredis.FakeRedis
) -> None:
    celery_app.broken = True
    response = client.post("/v1/messages", json={"user": "alice", "text": "hi"}, headers={"Idempotency-Key": "k2"})
    assert response.status_code == 503 and response.headers["Retry-After"]
    celery_app.broken = False
    # The metrics recorder may flush its request counters meanwhile (it did on a loaded CI run): those are not
    # the message's state, which must all be gone.
    assert [k for k in map(str, fake_redis.keys("test:*")) if not k.startswith("test:metrics:")] == []
    assert celery_app.sent == []


def test_redis_down_gets_503(settings: Settings) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    dead = fakeredis.FakeRedis(decode_responses=True, server=server)
    app = create_app(settings, client=dead, celery=RecordingCelery(dead))
    test_client = keyed(app.test_client())
    assert test_client.post("/v1/messages", json={"user": "alice", "text": "hi"}).status_code == 503
    assert test_client.get("/readyz").status_code == 503
    assert test_client.get("/healthz").status_code == 200


def test_an_unknown_message_gets_404(client: FlaskClient) -> None:
    response = client.get("/v1/messages/does-not-exist")
    assert response.status_code == 404 and "error" in response.get_json()


@pytest.mark.parametrize("wait", ["abc", "-1", "1000"])
def test_a_bad_wait_gets_400(client: FlaskClient, wait: str) -> None:
    assert client.get(f"/v1/messages/x?wait={wait}").status_code == 400


def test_unknown_routes_answer_json(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.is_json


def test_a_streamed_message_asks_for_partials_and_a_partial_poll_returns_when_one_is_newer(
    client: FlaskClient, settings: Settings
) -> None:
    message_id = client.post("/v1/messages", json={"user": "alice", "text": "hi", "stream": True}).get_json()[
        "message_id"]
    store = client.application.extensions["switchboard"].messages
    assert store.get(message_id).envelope["reply"]["stream_interval"] == settings.stream_interval_seconds
    plain = client.post("/v1/messages", json={"user": "bob", "text": "hi"}).get_json()["message_id"]
    assert store.get(plain).envelope["reply"]["stream_interval"] == 0
    store.update(message_id, status="processing", partial="Hello th", partial_seq=2)
    body = client.get(f"/v1/messages/{message_id}?wait=10&partial=1").get_json()  # seq 2 > 1: at once
    assert body["status"] == "processing" and body["partial"] == {"seq": 2, "text": "Hello th"}


@pytest.mark.parametrize("partial", ["-1", "x", "1.5", "9999999999"])
def test_a_bad_partial_gets_400(client: FlaskClient, partial: str) -> None:
    response = client.get(f"/v1/messages/abc?partial={partial}")
    assert response.status_code == 400 and "partial" in response.get_json()["fields"]


def test_a_poll_that_would_wait_past_its_clients_share_gets_429_at_once_but_never_one_already_answered(
    client: FlaskClient,
) -> None:
    ctx = client.application.extensions["switchboard"]
    pending = client.post("/v1/messages", json={"user": "alice", "text": "hi"}).get_json()["message_id"]
    done = client.post("/v1/messages", json={"user": "alice", "text": "hello"}).get_json()["message_id"]
    ctx.messages.update(done, status="answered", reply='{"text": "hi there"}')
    held = [ctx.waits.hold("127.0.0.1") for _ in range(ctx.settings.long_poll_per_client)]
    for slot in held:
        slot.__enter__()  # the Flask test client's address already holds its share of waits
    try:
        refused = client.get(f"/v1/messages/{pending}?wait=20")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert "LONG_POLL_PER_CLIENT" in refused.get_json()["error"]
        assert client.get(f"/v1/messages/{pending}?wait=0").get_json()["status"] == "queued"  # no wait: no slot
        assert client.get(f"/v1/messages/{done}?wait=20").get_json()["status"] == "answered"  # nothing to wait for
        assert client.get("/v1/messages/unknown?wait=20").status_code == 404
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    assert ctx.waits.waiting() == 0
