"""Client keys (issue 17 item 1): no one is anyone on the API doors, and one tenant or browser never reads another.

The reproductions: ``POST /v1/messages {"user": "alice"}`` needed no credential, joined alice's session and
got ids that opened her replies; the web chat's user id was whatever the page said.
"""

from __future__ import annotations

import io
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from edge.clients import browser_token
from tasks.settings import SettingsError, load_settings, parse_api_keys
from tests.support.edge import RecordingCelery
from tests.support.factories import API_KEY, AUTH, OTHER_API_KEY, OTHER_AUTH

ROTATED_KEY = "tests-rotated-0123456789abcdef"


@pytest.fixture
def anonymous(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, headers: dict[str, str] | None = None, **body: Any) -> Any:
    return client.post("/v1/messages", json={"user": "alice", "text": "hi", **body}, headers=headers or {})


def upload(client: FlaskClient, headers: dict[str, str], user: str = "alice") -> Any:
    return client.post("/v1/files", headers=headers, content_type="multipart/form-data",
                       data={"user": user, "file": (io.BytesIO(b"secret notes"), "notes.txt", "text/plain")})


def chat_token(client: FlaskClient, token: str | None = None) -> dict[str, Any]:
    response = client.post("/v1/chat/token", headers={"Authorization": f"Bearer {token}"} if token else {})
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.get_json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/messages"), ("GET", "/v1/messages/0123456789abcdef0123456789abcdef"),
    ("POST", "/v1/files"), ("GET", "/v1/files/0123456789abcdef0123456789abcdef"),
])
@pytest.mark.parametrize("authorization", [None, "Bearer ", "Bearer not-a-key-0123456789", f"Basic {API_KEY}",
                                           f"Bearer {API_KEY}x", "Bearer wc1.0.0.0"])
def test_every_client_door_answers_401_json_without_a_valid_key(
    anonymous: FlaskClient, celery_app: RecordingCelery, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = anonymous.open(path, method=method, headers=headers, json={"user": "alice", "text": "hi"})
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Switchboard"'
    assert "Authorization: Bearer" in response.get_json()["error"]
    assert celery_app.sent == []


def test_with_no_keys_configured_the_doors_say_which_setting_opens_them(make_app: Any) -> None:
    client = make_app(api_keys="").test_client()
    response = post(client, headers=AUTH)
    assert response.status_code == 401 and "API_KEYS" in response.get_json()["error"]


def test_the_same_user_under_two_keys_is_two_people(client: FlaskClient, app: Flask) -> None:
    """The reproduction: a stranger naming ``alice`` joined her session and read her replies by id."""
    hers = post(client, headers=AUTH, text="my secret plan").get_json()
    forged = post(client, headers=OTHER_AUTH, text="what did I say before?").get_json()
    assert hers["session_id"] == "api:tests:alice" and forged["session_id"] == "api:others:alice"
    store = app.extensions["switchboard"].messages
    assert store.get(hers["message_id"]).owner == "key:tests"
    # Her message id opens nothing for the other key: the same 404 as an id that does not exist.
    theirs = client.get(f"/v1/messages/{hers['message_id']}", headers=OTHER_AUTH)
    missing = client.get("/v1/messages/0123456789abcdef0123456789abcdef", headers=OTHER_AUTH)
    assert theirs.status_code == missing.status_code == 404
    assert set(theirs.get_json()) == set(missing.get_json()) == {"error"}
    assert client.get(f"/v1/messages/{hers['message_id']}?wait=1", headers=OTHER_AUTH).status_code == 404
    assert client.get(f"/v1/messages/{hers['message_id']}", headers=AUTH).status_code == 200


def test_an_idempotency_key_of_one_tenant_neither_replays_nor_swallows_anothers(client: FlaskClient) -> None:
    first = client.post("/v1/messages", json={"user": "alice", "text": "a"},
                        headers={**OTHER_AUTH, "Idempotency-Key": "order-42"})
    hers = client.post("/v1/messages", json={"user": "alice", "text": "b"},
                       headers={**AUTH, "Idempotency-Key": "order-42"})
    assert first.status_code == hers.status_code == 202
    assert "Idempotent-Replayed" not in hers.headers
    assert hers.get_json()["message_id"] != first.get_json()["message_id"]


def test_two_keys_with_one_label_are_one_tenant_so_a_key_can_be_rotated(make_app: Any) -> None:
    client = make_app(api_keys=f"tests={API_KEY},tests={ROTATED_KEY}").test_client()
    sent = post(client, headers=AUTH).get_json()
    assert sent["session_id"] == "api:tests:alice"
    assert client.get(f"/v1/messages/{sent['message_id']}", headers=bearer(ROTATED_KEY)).status_code == 200


def test_a_key_without_a_label_is_labelled_by_its_hash() -> None:
    (label,) = parse_api_keys(API_KEY).values()
    assert label.startswith("k") and len(label) == 13 and API_KEY not in label
    assert parse_api_keys("AbCdEfGhIjKlMnOp0123==") == {"AbCdEfGhIjKlMnOp0123==": parse_api_keys(
        "AbCdEfGhIjKlMnOp0123==")["AbCdEfGhIjKlMnOp0123=="]}  # '=' in a key without a label: a key


@pytest.mark.parametrize("value", ["short", "a=short-key", "Bad Label=0123456789abcdef", "a=",
                                   f"{API_KEY},{API_KEY}", "a=0123456789 abcdef"])
def test_malformed_api_keys_stop_the_process_with_a_clear_error(value: str) -> None:
    with pytest.raises(SettingsError, match="API_KEYS"):
        load_settings({"API_KEYS": value})


def test_an_upload_is_read_by_its_uploader_and_its_signed_url_only(client: FlaskClient, anonymous: FlaskClient,
                                                                   app: Flask) -> None:
    body = upload(client, AUTH).get_json()
    file_id = body["file"]["id"]
    record = app.extensions["switchboard"].messages.get(body["message_id"])
    assert record.owner == "key:tests" and body["session_id"] == "api:tests:alice"
    plain = f"/v1/files/{file_id}"
    assert client.get(plain, headers=AUTH).data == b"secret notes"
    assert client.get(plain, headers=OTHER_AUTH).status_code == 404
    assert anonymous.get(plain).status_code == 401
    # What converters and helpers fetch: the attachment's URL, signed until the file expires.
    url = urlsplit(record.envelope["attachments"][0]["url"])
    signed = f"{url.path}?{url.query}"
    assert "sig=" in url.query and anonymous.get(signed).data == b"secret notes"
    forged = anonymous.get(signed.replace("sig=", "sig=A"))
    assert forged.status_code == 403 and "signature" in forged.get_json()["error"]
    moved = anonymous.get(f"/v1/files/{'0' * 32}?{url.query}")  # another file's id under this signature
    assert moved.status_code == 403
    expires = int(url.query.split("expires=")[1].split("&")[0])
    later = anonymous.get(signed.replace(f"expires={expires}", f"expires={expires + 1}"))
    assert later.status_code == 403  # the expiry is signed too


def test_a_signed_file_url_stops_working_when_it_expires(client: FlaskClient, anonymous: FlaskClient,
                                                        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    body = upload(client, AUTH).get_json()
    record = app.extensions["switchboard"].messages.get(body["message_id"])
    url = urlsplit(record.envelope["attachments"][0]["url"])
    future = time.time() + app.extensions["switchboard"].settings.files_ttl_seconds + 5
    monkeypatch.setattr(time, "time", lambda: future)
    assert anonymous.get(f"{url.path}?{url.query}").status_code == 403


def test_a_browser_token_binds_the_pages_user_and_renews_for_the_same_browser(anonymous: FlaskClient) -> None:
    first = chat_token(anonymous)
    assert first["token"].startswith("wc1.") and first["user"].startswith("web-")
    assert first["expires_in"] > 0
    renewed = chat_token(anonymous, first["token"])
    assert renewed["user"] == first["user"] and renewed["token"].startswith("wc1.")
    sent = post(anonymous, bearer(first["token"]), user=first["user"], session="s1")
    assert sent.status_code == 202, sent.get_json()
    browser = first["user"].removeprefix("web-")
    assert sent.get_json()["session_id"] == f"webchat:{browser}#s1"
    # The page's user is the token's: another name is refused, not quietly renamed.
    other_name = post(anonymous, bearer(first["token"]), user="alice")
    assert other_name.status_code == 403 and other_name.get_json()["fields"] == {"user": ["not yours"]}
    assert upload(anonymous, bearer(first["token"]), user="alice").status_code == 403
    assert upload(anonymous, bearer(first["token"]), user=first["user"]).status_code == 202


def test_one_browser_cannot_read_anothers_conversation_by_id(anonymous: FlaskClient, client: FlaskClient) -> None:
    mine, theirs = chat_token(anonymous), chat_token(anonymous)
    assert mine["user"] != theirs["user"]
    sent = post(anonymous, bearer(mine["token"]), user=mine["user"]).get_json()
    path = f"/v1/messages/{sent['message_id']}"
    assert anonymous.get(path, headers=bearer(mine["token"])).status_code == 200
    assert anonymous.get(path, headers=bearer(theirs["token"])).status_code == 404
    assert client.get(path, headers=AUTH).status_code == 404  # an API tenant cannot either
    api_message = post(client, headers=AUTH).get_json()["message_id"]
    assert anonymous.get(f"/v1/messages/{api_message}", headers=bearer(mine["token"])).status_code == 404


def test_forged_expired_and_foreign_browser_tokens_are_refused(anonymous: FlaskClient, app: Flask) -> None:
    good = chat_token(anonymous)["token"]
    prefix, browser, expires, signature = good.split(".")
    settings = app.extensions["switchboard"].settings
    forged = [
        f"{prefix}.{'f' * 24}.{expires}.{signature}",  # someone else's browser id under this signature
        f"{prefix}.{browser}.{int(expires) + 10}.{signature}",  # a longer life
        f"{prefix}.{browser}.{expires}.{signature[:-1]}A",
        browser_token(settings.replace(switchboard_secret="whsec_" + "B" * 43 + "="), browser)[0],  # other secret
        browser_token(settings, browser, now=time.time() - settings.webchat_token_ttl - 1)[0],  # expired
    ]
    for token in forged:
        assert post(anonymous, bearer(token), user=f"web-{browser}").status_code == 401, token
        assert chat_token(anonymous, token)["user"] != f"web-{browser}"  # no renewal: a new browser instead


def test_new_browsers_are_rate_limited_per_address_and_renewals_are_free(make_app: Any) -> None:
    client = make_app(rate_limit_browsers="2/hour").test_client()
    token = chat_token(client)["token"]
    chat_token(client)
    refused = client.post("/v1/chat/token")
    assert refused.status_code == 429 and "new browsers" in refused.get_json()["error"]
    assert int(refused.headers["Retry-After"]) >= 1
    for _ in range(3):
        assert chat_token(client, token)["token"]


def test_a_webchat_without_a_signing_secret_says_so(make_app: Any) -> None:
    response = make_app(switchboard_secret="").test_client().post("/v1/chat/token")
    assert response.status_code == 503 and "SWITCHBOARD_SECRET" in response.get_json()["error"]


def test_provider_webhooks_need_no_client_key(anonymous: FlaskClient, celery_app: RecordingCelery) -> None:
    """Channel webhooks keep their provider signatures (test_signatures.py): an API key is not asked for."""
    from tests.security import providers
    from tests.security.providers import send

    assert send(anonymous, providers.telegram()).status_code == 200
    assert len(celery_app.sent) == 1


def test_the_api_keys_are_never_echoed(client: FlaskClient) -> None:
    for headers in (AUTH, OTHER_AUTH, {"Authorization": "Bearer wrong-key-0123456789abcdef"}):
        response = client.get("/v1/messages/0123456789abcdef0123456789abcdef", headers=headers)
        text = response.get_data(as_text=True)
        assert API_KEY not in text and OTHER_API_KEY not in text and "wrong-key" not in text
