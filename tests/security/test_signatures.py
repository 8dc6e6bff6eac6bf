"""Forged, stale and replayed requests on every webhook the edge serves, and on helper registration.

For each scheme: what it guarantees is tested (a forged request is refused
and admits nothing; a stale one is refused where the scheme carries a time;
a replay is refused where the scheme has a nonce, and otherwise admits the
message once, through the provider's delivery id).  docs/security.md has
the table.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from edge.channels.base import CallbackReply
from tests.security import providers
from tests.security.providers import send
from tests.support.edge import RecordingCelery

# --- Twilio: no timestamp, no nonce; replays are absorbed by the MessageSid / CallSid:turn dedupe ----------

TWILIO_ROUTES = [
    ("/v1/channels/twilio/sms", providers.sms_form()),
    ("/v1/channels/twilio/voice", providers.call_form()),
    ("/v1/channels/twilio/voice/gather?turn=1", providers.call_form()),
    ("/v1/channels/twilio/voice/wait?message_id=abc&turn=1&n=0", providers.call_form()),
]


@pytest.mark.parametrize(("path", "form"), TWILIO_ROUTES)
def test_twilio_webhooks_refuse_unsigned_forged_and_tampered_requests(
    client: FlaskClient, celery_app: RecordingCelery, path: str, form: dict[str, str]
) -> None:
    good = providers.twilio(path, form)
    unsigned = providers.Signed(path, good.body)
    wrong_token = providers.twilio(path, form, token="not-the-token")
    other_url = providers.twilio(path, form, signed_url="https://attacker.example" + path)
    tampered = providers.Signed(path, providers.twilio(path, {**form, "From": "+15550009999"}).body, good.headers)
    for request in (unsigned, wrong_token, other_url, tampered):
        response = send(client, request)
        assert response.status_code == 403, (request, response.get_json())
        assert "error" in response.get_json()
    assert celery_app.sent == []


@pytest.mark.parametrize(("path", "form"), [TWILIO_ROUTES[0], TWILIO_ROUTES[2]])
def test_a_replayed_twilio_request_is_answered_but_admitted_once(
    client: FlaskClient, celery_app: RecordingCelery, path: str, form: dict[str, str]
) -> None:
    """Twilio's scheme cannot tell a replay from the original; the delivery id dedupe makes it harmless."""
    signed = providers.twilio(path, form)
    first, replay = send(client, signed), send(client, signed)
    assert first.status_code == replay.status_code == 200
    assert len(celery_app.sent) == 1


# --- Telegram: a shared secret in a header; update_id dedupe ---------------------------------------------------

def test_telegram_refuses_a_missing_or_wrong_secret_token(client: FlaskClient, celery_app: RecordingCelery) -> None:
    good = providers.telegram()
    for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "guess"},
                    {"X-Telegram-Bot-Api-Secret-Token": providers.TELEGRAM_SECRET + "x"}):
        response = send(client, providers.Signed(good.path, good.body, headers, good.content_type))
        assert response.status_code == 403 and "error" in response.get_json()
    assert celery_app.sent == []


def test_a_replayed_telegram_update_is_admitted_once(client: FlaskClient, celery_app: RecordingCelery) -> None:
    update = providers.telegram(update_id=77)
    assert send(client, update).status_code == send(client, update).status_code == 200
    assert len(celery_app.sent) == 1


# --- Slack: HMAC over timestamp and body, five-minute window; event_id dedupe ---------------------------------

def test_slack_refuses_forged_stale_and_future_requests(client: FlaskClient, celery_app: RecordingCelery) -> None:
    now = time.time()
    unsigned = providers.Signed("/v1/channels/slack/events", providers.slack().body, {}, "application/json")
    for request in (providers.slack(secret="forged"), providers.slack(at=now - 6 * 60),
                    providers.slack(at=now + 6 * 60), unsigned):
        response = send(client, request)
        assert response.status_code == 403 and "error" in response.get_json()
    good = providers.slack(text="original")
    swapped_body = providers.Signed(good.path, providers.slack(text="swapped").body, good.headers, good.content_type)
    assert send(client, swapped_body).status_code == 403
    assert celery_app.sent == []


def test_a_replayed_slack_event_within_its_window_is_admitted_once(
    client: FlaskClient, celery_app: RecordingCelery
) -> None:
    event = providers.slack(event_id="EvReplay")
    assert send(client, event).status_code == send(client, event).status_code == 200
    assert len(celery_app.sent) == 1


# --- Mailgun (both routes): HMAC over timestamp + token, fresh, single-use token --------------------------------

@pytest.mark.parametrize("path", ["/v1/channels/email/mailgun", "/v1/channels/email/mailgun/mime"])
def test_mailgun_refuses_forged_stale_and_replayed_posts(
    client: FlaskClient, celery_app: RecordingCelery, path: str
) -> None:
    assert send(client, providers.mailgun(path, key="forged")).status_code == 403
    assert send(client, providers.mailgun(path, at=time.time() - 3600)).status_code == 403
    assert send(client, providers.mailgun(path, at=time.time() + 3600)).status_code == 403
    assert celery_app.sent == []
    original = providers.mailgun(path, token=f"once-{path}")
    assert send(client, original).status_code == 200
    replay = send(client, original)
    assert replay.status_code == 403 and "replay" in replay.get_json()["error"]
    assert len(celery_app.sent) == 1


# --- SendGrid: basic auth only (no signature, no time); Message-ID dedupe -----------------------------------------

def test_sendgrid_refuses_missing_and_wrong_credentials(client: FlaskClient, celery_app: RecordingCelery) -> None:
    good = providers.sendgrid()
    client.environ_base.pop("HTTP_AUTHORIZATION", None)  # the fixture's API key: no credentials at all here
    assert send(client, providers.Signed(good.path, good.body)).status_code == 401
    assert send(client, providers.sendgrid(password="guess")).status_code == 403
    assert celery_app.sent == []
    first, replay = send(client, good), send(client, good)
    assert first.status_code == replay.status_code == 200
    assert (first.get_json()["status"], replay.get_json()["status"]) == ("queued", "duplicate")
    assert len(celery_app.sent) == 1


# --- The channel callbacks: Standard Webhooks, five-minute window, webhook-id sent once ------------------------

@pytest.fixture
def sent_replies(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[CallbackReply]:
    """What the Telegram channel was asked to send (instead of calling the Bot API)."""
    replies: list[CallbackReply] = []
    monkeypatch.setattr(app.extensions["switchboard.channels"]["telegram"], "send", replies.append)
    return replies


def test_a_channel_callback_refuses_forged_and_stale_signatures(
    client: FlaskClient, sent_replies: list[CallbackReply]
) -> None:
    good = providers.callback("telegram")
    forged = providers.callback("telegram", secret="whsec_" + "Zm9yZ2VkLXNlY3JldC1mb3ItdGhlLXRlc3RzMTIzNA==")
    stale = providers.callback("telegram", at=datetime.now(UTC) - timedelta(minutes=10))
    future = providers.callback("telegram", at=datetime.now(UTC) + timedelta(minutes=10))
    unsigned = providers.Signed(good.path, good.body, {}, good.content_type)
    for request in (forged, stale, future, unsigned):
        response = send(client, request)
        assert response.status_code == 401 and "error" in response.get_json()
    assert sent_replies == []


def test_a_replayed_channel_callback_is_sent_once(client: FlaskClient, sent_replies: list[CallbackReply]) -> None:
    reply = providers.callback("telegram", webhook_id="reply-7")
    assert send(client, reply).status_code == send(client, reply).status_code == 204
    assert [r.message_id for r in sent_replies] == ["reply-7"]


def test_a_callback_signed_for_one_body_cannot_carry_another(
    client: FlaskClient, sent_replies: list[CallbackReply]
) -> None:
    good = providers.callback("telegram", webhook_id="reply-8")
    swapped = providers.Signed(good.path, good.body.replace(b"the answer", b"pay here"), good.headers,
                               "application/json")
    assert send(client, swapped).status_code == 401
    assert sent_replies == []


# --- Helper registration and heartbeats ------------------------------------------------------------------------

MANIFEST: dict[str, Any] = {
    "name": "echo", "url": "http://127.0.0.1:9/", "version": "1",
    "capabilities": [{"name": "say", "description": "Says it", "input_schema": {"type": "object"},
                      "output_schema": {"type": "object"}}],
}


def register(client: FlaskClient, token: str | None, manifest: dict[str, Any] = MANIFEST) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/v1/helpers", json=manifest, headers=headers)


def test_registration_needs_the_token_and_is_closed_without_one(client: FlaskClient, make_app: Any) -> None:
    assert register(client, None).status_code == 401
    assert register(client, "guess").status_code == 401
    assert register(client, providers.REGISTRATION_TOKEN + " ").status_code == 201  # the token, trimmed
    closed = make_app(helper_registration_token="").test_client()
    response = register(closed, "")
    assert response.status_code == 401 and "closed" in response.get_json()["error"]


def test_one_helper_cannot_keep_alive_or_remove_another(client: FlaskClient) -> None:
    echo = register(client, providers.REGISTRATION_TOKEN).get_json()["secret"]
    other = register(client, providers.REGISTRATION_TOKEN, {**MANIFEST, "name": "other"}).get_json()["secret"]
    for method in (client.put, client.delete):
        path = "/v1/helpers/echo/heartbeat" if method == client.put else "/v1/helpers/echo"
        assert method(path).status_code == 401
        assert method(path, headers={"Authorization": f"Bearer {other}"}).status_code == 401
        assert method(path, headers={"Authorization": providers.REGISTRATION_TOKEN}).status_code == 401
    names = {h["name"] for h in client.get("/v1/helpers").get_json()["helpers"]}
    assert names == {"echo", "other"}
    assert client.put("/v1/helpers/echo/heartbeat", headers={"Authorization": f"Bearer {echo}"}).status_code == 200
    listed = client.get("/v1/helpers").get_json()["helpers"]
    assert all("secret" not in helper for helper in listed)  # the list never shows a secret
