"""Per-caller quotas (issue 17 item 6): one tenant or browser cannot fill the system for the others.

``QUOTA_OPEN_MESSAGES`` bounds a caller's messages neither answered nor failed, ``QUOTA_STORED_BYTES`` the bytes
of its uploads that have not expired; past either: 429 + Retry-After, nothing written, and everyone else
goes on as before.
"""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tasks.keys import Keys
from tests.support.factories import AUTH, OTHER_AUTH


def post(client: FlaskClient, headers: dict[str, str], user: str = "alice") -> Any:
    return client.post("/v1/messages", json={"user": user, "text": "hi"}, headers=headers)


def upload(client: FlaskClient, headers: dict[str, str], size: int = 10) -> Any:
    return client.post("/v1/files", headers=headers, content_type="multipart/form-data",
                       data={"user": "alice", "file": (io.BytesIO(b"x" * size), "notes.txt", "text/plain")})


def test_open_messages_are_bounded_per_tenant_and_the_others_go_on(make_app: Any) -> None:
    app: Flask = make_app(quota_open_messages=3)
    client = app.test_client()
    sent = [post(client, AUTH, user=f"u{n}") for n in range(3)]  # the quota is the tenant's, whatever its users
    assert [r.status_code for r in sent] == [202, 202, 202]
    refused = post(client, AUTH, user="u9")
    assert refused.status_code == 429 and "QUOTA_OPEN_MESSAGES" in refused.get_json()["error"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert post(client, OTHER_AUTH).status_code == 202  # another tenant is not blocked
    # An answer frees its place: the next message is taken.
    app.extensions["switchboard"].messages.update(sent[0].get_json()["message_id"], status="answered")
    assert post(client, AUTH, user="u9").status_code == 202
    assert post(client, AUTH, user="u9").status_code == 429


def test_a_message_whose_record_is_gone_frees_its_place(make_app: Any, fake_redis: Any) -> None:
    """A release no one made (a crash, an expiry) cannot leak a place: a full set is checked against the records."""
    app: Flask = make_app(quota_open_messages=2)
    client = app.test_client()
    first, _ = post(client, AUTH), post(client, AUTH)
    assert post(client, AUTH).status_code == 429
    fake_redis.delete(Keys("sec").message(first.get_json()["message_id"]))
    assert post(client, AUTH).status_code == 202


def test_an_idempotent_retry_is_never_refused_by_the_quota(make_app: Any) -> None:
    client = make_app(quota_open_messages=1).test_client()
    headers = {**AUTH, "Idempotency-Key": "k1"}
    first = client.post("/v1/messages", json={"user": "alice", "text": "hi"}, headers=headers)
    again = client.post("/v1/messages", json={"user": "alice", "text": "hi"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"


def test_each_browser_has_its_own_quota(make_app: Any) -> None:
    client = make_app(quota_open_messages=1).test_client()
    tokens = [client.post("/v1/chat/token").get_json() for _ in range(2)]

    def send(token: dict[str, Any]) -> int:
        return int(post(client, {"Authorization": f"Bearer {token['token']}"}, user=token["user"]).status_code)

    assert [send(tokens[0]), send(tokens[0]), send(tokens[1])] == [202, 429, 202]


def test_stored_bytes_are_bounded_per_tenant_until_files_expire(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: Flask = make_app(quota_stored_bytes=25, files_ttl_seconds=600)
    client = app.test_client()
    assert [upload(client, AUTH).status_code for _ in range(2)] == [202, 202]
    refused = upload(client, AUTH)
    assert refused.status_code == 429 and "QUOTA_STORED_BYTES" in refused.get_json()["error"]
    assert 500 < int(refused.headers["Retry-After"]) <= 601  # when the oldest file expires
    assert upload(client, OTHER_AUTH).status_code == 202
    assert upload(client, AUTH, size=5).status_code == 202  # what still fits is taken
    store = app.extensions["switchboard"].files
    assert store.stored_bytes("key:tests") == 25
    later = time.time() + 601
    monkeypatch.setattr(time, "time", lambda: later)
    assert upload(client, AUTH).status_code == 202
    assert store.stored_bytes("key:tests") == 10


def test_an_upload_whose_message_is_refused_gives_its_bytes_back(make_app: Any, fake_redis: Any) -> None:
    app: Flask = make_app(quota_open_messages=1, quota_stored_bytes=100)
    client = app.test_client()
    assert upload(client, AUTH).status_code == 202
    refused = upload(client, AUTH)
    assert refused.status_code == 429 and "QUOTA_OPEN_MESSAGES" in refused.get_json()["error"]
    store = app.extensions["switchboard"].files
    assert store.stored_bytes("key:tests") == 10  # the refused upload's bytes are not counted, nor kept
    assert len(fake_redis.keys("sec:file:*")) == 1
