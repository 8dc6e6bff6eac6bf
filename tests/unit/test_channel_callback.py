from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask import Blueprint
from flask.testing import FlaskClient

import edge.channels
from edge.channels.base import CallbackReply, Channel, PermanentSendError, TemporarySendError
from tasks.settings import Settings
from tasks.signing import new_secret, sign_headers
from tests.support.edge import EdgeApp


class RecordingChannel(Channel):
    name = "recording"
    sent: list[CallbackReply] = []
    fail_with: Exception | None = None

    def blueprint(self) -> Blueprint:
        return Blueprint("recording", __name__)

    def send(self, reply: CallbackReply) -> None:
        if RecordingChannel.fail_with is not None:
            raise RecordingChannel.fail_with
        RecordingChannel.sent.append(reply)


@pytest.fixture
def client(edge_app: EdgeApp, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    monkeypatch.setitem(edge.channels.BUILTIN_CHANNELS, "recording", RecordingChannel)
    RecordingChannel.sent, RecordingChannel.fail_with = [], None
    with edge_app().test_client() as test_client:
        yield test_client


def post(client: FlaskClient, secret: str, webhook_id: str = "m1") -> int:
    body = json.dumps({"message_id": "m1", "session_id": "recording:bob", "channel": "recording",
                       "status": "answered", "text": "hi bob", "error": None, "context": {"to": "bob"},
                       "created_at": "now"})
    response = client.post("/v1/channels/recording/callback", data=body,
                           headers=sign_headers(secret, webhook_id, body))
    return response.status_code


def test_a_signed_reply_is_sent_once_however_often_it_arrives(client: FlaskClient, settings: Settings) -> None:
    assert post(client, settings.switchboard_secret) == 204
    assert post(client, settings.switchboard_secret) == 204
    assert [(r.text, r.context) for r in RecordingChannel.sent] == [("hi bob", {"to": "bob"})]


def test_a_forged_reply_is_refused(client: FlaskClient) -> None:
    assert post(client, new_secret()) == 401 and RecordingChannel.sent == []


def test_provider_failures_map_to_retry_or_dead_letter(client: FlaskClient, settings: Settings) -> None:
    RecordingChannel.fail_with = TemporarySendError("429 from provider")
    assert post(client, settings.switchboard_secret) == 503
    RecordingChannel.fail_with = PermanentSendError("unknown number")
    assert post(client, settings.switchboard_secret) == 422
    RecordingChannel.fail_with = None
    assert post(client, settings.switchboard_secret) == 204  # nothing was marked sent before


def test_an_unknown_channel_is_404(client: FlaskClient, settings: Settings) -> None:
    response = client.post("/v1/channels/nope/callback", json={})
    assert response.status_code == 404
