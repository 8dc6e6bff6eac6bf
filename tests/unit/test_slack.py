"""Slack channel without a server: normalize, signature window, url_verification, retries, send's error mapping."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from edge.app import create_app
from edge.channels.base import CallbackReply, PermanentSendError, TemporarySendError
from edge.channels.slack import Slack, escape, normalize
from tasks.settings import Settings
from tests.support.edge import EdgeApp, RecordingCelery

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_USER = "UBOT"


def event_payload(event: dict[str, Any], event_id: str = "Ev1") -> dict[str, Any]:
    return {"type": "event_callback", "team_id": "T1", "event_id": event_id, "event_time": 0, "event": event,
            "authorizations": [{"team_id": "T1", "user_id": BOT_USER, "is_bot": True}]}


def mention(text: str = f"<@{BOT_USER}> hello there", **extra: Any) -> dict[str, Any]:
    return {"type": "app_mention", "user": "U1", "text": text, "ts": "1700.0001", "channel": "C1", **extra}


def dm(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel_type": "im", "user": "U1", "text": text, "ts": "1700.0002",
            "channel": "D1", **extra}


def envelope_of(payload: dict[str, Any]) -> Any:
    return normalize(payload, message_id="m1", callback_url="http://edge/cb")


# --- normalize ---------------------------------------------------------------------


def test_a_mention_starts_a_thread_that_is_its_conversation() -> None:
    envelope = envelope_of(event_payload(mention()))
    assert envelope.text == "hello there" and envelope.sender == "U1"
    assert envelope.session_id == "slack:T1:C1:1700.0001"
    assert envelope.reply.context == {"channel": "C1", "thread_ts": "1700.0001"}
    assert envelope.channel_message_id == "Ev1"


def test_a_mention_inside_a_thread_stays_in_that_thread() -> None:
    envelope = envelope_of(event_payload(mention(thread_ts="1600.0000")))
    assert envelope.session_id == "slack:T1:C1:1600.0000" and envelope.reply.context["thread_ts"] == "1600.0000"


def test_a_direct_message_is_one_running_conversation_answered_top_level() -> None:
    envelope = envelope_of(event_payload(dm("what's up?")))
    assert envelope.session_id == "slack:T1:D1" and envelope.reply.context == {"channel": "D1"}
    threaded = envelope_of(event_payload(dm("more", thread_ts="1700.0002")))
    assert threaded.session_id == "slack:T1:D1:1700.0002"


@pytest.mark.parametrize("event", [
    dm(bot_id="B1"),
    dm(subtype="message_changed"),
    {"type": "message", "channel_type": "channel", "user": "U1", "text": "chatter", "ts": "1", "channel": "C1"},
    mention(text=f"<@{BOT_USER}>"),
    {"type": "reaction_added", "user": "U1"},
])
def test_events_not_for_the_bot_are_dropped(event: dict[str, Any]) -> None:
    assert envelope_of(event_payload(event)) is None


def test_model_output_cannot_ping_a_channel_or_forge_a_link() -> None:
    assert escape("<!channel> & <http://x|y>") == "&lt;!channel&gt; &amp; &lt;http://x|y&gt;"


# --- the webhook -------------------------------------------------------------------


class MovableClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def app(edge_app: EdgeApp, clock: MovableClock) -> Flask:
    app = edge_app(slack_signing_secret=SIGNING_SECRET, slack_bot_token="xoxb-test")
    app.extensions["switchboard.channels"]["slack"].clock = clock
    return app


def celery_of(app: Flask) -> RecordingCelery:
    celery: RecordingCelery = app.extensions["switchboard"].celery
    return celery


def signed(body: str, timestamp: float, secret: str = SIGNING_SECRET) -> dict[str, str]:
    base = f"v0:{int(timestamp)}:{body}".encode()
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(int(timestamp)), "X-Slack-Signature": signature,
            "Content-Type": "application/json"}


def post(client: FlaskClient, payload: Any, *, at: float, secret: str = SIGNING_SECRET, retry: int = 0) -> Any:
    body = json.dumps(payload)
    headers = signed(body, at, secret)
    if retry:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return client.post("/v1/channels/slack/events", data=body, headers=headers)


def test_the_url_verification_challenge_is_answered(client: FlaskClient, clock: MovableClock) -> None:
    response = post(client, {"type": "url_verification", "challenge": "abc123"}, at=clock.now)
    assert response.status_code == 200 and response.json == {"challenge": "abc123"}


def test_forged_and_stale_requests_are_refused(client: FlaskClient, app: Flask, clock: MovableClock) -> None:
    payload = event_payload(mention())
    assert post(client, payload, at=clock.now, secret="forged").status_code == 403
    assert post(client, payload, at=clock.now - 301).status_code == 403  # outside the 5-minute window
    assert client.post("/v1/channels/slack/events", json=payload).status_code == 403  # unsigned
    assert celery_of(app).sent == []
    assert post(client, payload, at=clock.now - 200).status_code == 200


def test_an_unconfigured_channel_refuses_everything(settings: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    app = create_app(settings, client=fake_redis, celery=RecordingCelery(fake_redis))
    body = json.dumps({"type": "url_verification", "challenge": "x"})
    response = app.test_client().post("/v1/channels/slack/events", data=body, headers=signed(body, time.time(), ""))
    assert response.status_code == 403 and "not configured" in (response.json or {})["error"]


def test_retries_of_an_event_are_queued_once(client: FlaskClient, app: Flask, clock: MovableClock) -> None:
    payload = event_payload(mention(), event_id="Ev7")
    assert post(client, payload, at=clock.now).status_code == 200
    assert post(client, payload, at=clock.now, retry=1).status_code == 200
    assert post(client, payload, at=clock.now, retry=2).status_code == 200
    assert len(celery_of(app).sent) == 1


def test_a_first_delivery_that_failed_before_admission_is_accepted_on_retry(
    client: FlaskClient, app: Flask, clock: MovableClock
) -> None:
    payload = event_payload(dm("are you there?"), event_id="Ev8")
    celery_of(app).broken = True
    assert post(client, payload, at=clock.now).status_code == 503
    celery_of(app).broken = False
    assert post(client, payload, at=clock.now, retry=1).status_code == 200
    assert len(celery_of(app).sent) == 1


def test_dropped_events_are_still_acknowledged(client: FlaskClient, app: Flask, clock: MovableClock) -> None:
    assert post(client, event_payload(dm(bot_id="B1")), at=clock.now).status_code == 200
    assert celery_of(app).sent == []


# --- sending -------------------------------------------------------------------------


class StubWebClient:
    def __init__(self, failures: list[tuple[int, str]] | None = None) -> None:
        self.posts: list[dict[str, Any]] = []
        self.failures = failures or []

    def chat_postMessage(self, **kwargs: Any) -> dict[str, Any]:  # slack_sdk's name
        if self.failures:
            status, error = self.failures.pop(0)
            response = SlackResponse(client=None, http_verb="POST", api_url="x", req_args={},
                                     data={"ok": False, "error": error}, headers={}, status_code=status)
            raise SlackApiError(error, response)
        self.posts.append(kwargs)
        return {"ok": True, "ts": str(len(self.posts))}


def reply(text: str, **context: Any) -> CallbackReply:
    return CallbackReply(message_id="r1", session_id="slack:T1:C1:1", channel="slack", status="answered",
                         text=text, error=None, context={"channel": "C1", **context}, created_at="now")


def test_replies_go_to_the_thread_escaped(app: Flask) -> None:
    channel: Slack = app.extensions["switchboard.channels"]["slack"]
    channel._client = stub = StubWebClient()  # type: ignore[assignment]
    channel.send(reply("a < b", thread_ts="1700.0001"))
    assert stub.posts == [{"channel": "C1", "text": "a &lt; b", "thread_ts": "1700.0001"}]


@pytest.mark.parametrize(("status", "error", "kind"), [
    (429, "ratelimited", TemporarySendError),
    (500, "internal_error", TemporarySendError),
    (200, "channel_not_found", PermanentSendError),
    (200, "not_in_channel", PermanentSendError),
])
def test_slack_errors_map_to_retry_or_give_up(app: Flask, status: int, error: str, kind: type[Exception]) -> None:
    channel: Slack = app.extensions["switchboard.channels"]["slack"]
    channel._client = StubWebClient([(status, error)])  # type: ignore[assignment]
    with pytest.raises(kind, match=error):
        channel.send(reply("hello"))


def test_a_long_reply_resumes_after_the_part_that_failed(app: Flask) -> None:
    channel: Slack = app.extensions["switchboard.channels"]["slack"]
    channel._client = stub = StubWebClient()  # type: ignore[assignment]
    text = "\n\n".join(["A" * 3000, "B" * 3000])
    stub.failures = []
    original = stub.chat_postMessage
    calls = {"n": 0}

    def flaky(**kwargs: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            stub.failures.append((503, "service_unavailable"))
        return original(**kwargs)

    stub.chat_postMessage = flaky  # type: ignore[method-assign]
    with pytest.raises(TemporarySendError):
        channel.send(reply(text))
    channel.send(reply(text))
    assert [p["text"][0] for p in stub.posts] == ["A", "B"]
