"""Telegram channel without a server: normalize, splitting, the webhook's checks and dedupe, send's retries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from edge.app import create_app
from edge.channels.base import CallbackReply, PermanentSendError, TemporarySendError
from edge.channels.splitting import split_text
from edge.channels.telegram.bot_api import TelegramError
from edge.channels.telegram.channel import MAX_MESSAGE_CHARS, SECRET_HEADER, Telegram
from edge.channels.telegram.cli import main
from edge.channels.telegram.normalize import file_signature, normalize
from tasks.names import CONVERT_ATTACHMENTS
from tasks.settings import Settings
from tasks.signing import sign_headers
from tests.support.edge import EdgeApp, RecordingCelery

SECRET = "s3cret-token_1"
BOT = "switchboard_bot"


def update(text: str = "hello", *, chat_type: str = "private", update_id: int = 1, **message: Any) -> dict[str, Any]:
    chat = {"id": 42 if chat_type == "private" else -1001, "type": chat_type}
    body = {"message_id": 7, "from": {"id": 42, "is_bot": False, "first_name": "Ann", "username": "ann"},
            "chat": chat, "date": 0, **({"text": text} if text else {}), **message}
    return {"update_id": update_id, "message": body}


def envelope_of(data: Mapping[str, Any]) -> Any:
    return normalize(data, message_id="m1", callback_url="http://edge/cb", bot_username=BOT,
                     file_url=lambda file_id: f"http://edge/files/{file_id}")


# --- normalize ---------------------------------------------------------------------


def test_a_private_message_becomes_an_envelope_in_the_chat_session() -> None:
    envelope = envelope_of(update("  hi there "))
    assert envelope.text == "hi there" and envelope.session_id == "telegram:42" and envelope.sender == "42"
    assert envelope.channel_message_id == "1"
    assert envelope.reply.context == {"chat_id": 42}
    assert envelope.metadata["username"] == "ann"


def test_group_messages_are_taken_only_when_they_address_the_bot() -> None:
    assert envelope_of(update("just chatting", chat_type="group")) is None
    mentioned = envelope_of(update(f"@{BOT} what time is it?", chat_type="supergroup"))
    assert mentioned.text == "what time is it?" and mentioned.session_id == "telegram:-1001"
    assert mentioned.reply.context == {"chat_id": -1001, "reply_to": 7}
    reply = envelope_of(update("and tomorrow?", chat_type="group", reply_to_message={"from": {"username": BOT}}))
    assert reply.text == "and tomorrow?"
    command = envelope_of(update(f"/ask@{BOT} weather", chat_type="group"))
    assert command.text == "weather" and command.metadata["command"] == "ask"
    helper = envelope_of(update(f"/calculate@{BOT} 6*7", chat_type="group"))
    assert helper.text == "/calculate 6*7"  # a helper command: the core's
    assert envelope_of(update(f"@{BOT}x not us", chat_type="group")) is None


@pytest.mark.parametrize(("text", "told", "metadata"), [
    ("/start", "Hello!", {"command": "start"}),
    ("/start ref-42", "Hello!", {"command": "start", "start_payload": "ref-42"}),
    (f"/start@{BOT}", "Hello!", {"command": "start"}),
    ("/help", "What can you do?", {"command": "help"}),
    ("/HELP how do I reset?", "how do I reset?", {"command": "help"}),
    ("/ask", "What can you do?", {"command": "ask"}),
    ("/ask what is 2+2?", "what is 2+2?", {"command": "ask"}),
    ("/started", "/started", {}),
    ("/start.x", "/start.x", {}),
    ("/shrug", "/shrug", {}),
])
def test_telegrams_own_commands_are_the_channels(text: str, told: str, metadata: dict[str, str]) -> None:
    """Issue 24: "/start" and "/ask@bot" reached the core as helper commands ("I don't know a command
    called 'start'"); the channel turns them into what the person means."""
    envelope = envelope_of(update(text))
    assert envelope.text == told
    assert {k: v for k, v in envelope.metadata.items() if k in ("command", "start_payload")} == metadata


def test_forum_topics_are_their_own_conversations() -> None:
    envelope = envelope_of(update(f"@{BOT} hi", chat_type="supergroup", is_topic_message=True, message_thread_id=9))
    assert envelope.session_id == "telegram:-1001:9" and envelope.reply.context["thread_id"] == 9


@pytest.mark.parametrize("data", [
    {"update_id": 1, "edited_message": update()["message"]},
    {"update_id": 1, "channel_post": update()["message"]},
    update(sticker={"file_id": "x"}, text=""),
    {"update_id": 1, "message": {**update()["message"], "from": {"id": 1, "is_bot": True}}},
])
def test_updates_not_for_the_bot_are_ignored(data: dict[str, Any]) -> None:
    assert envelope_of(data) is None


def test_voice_photo_and_document_become_attachments() -> None:
    voice = envelope_of(update("", voice={"file_id": "V1", "mime_type": "audio/ogg", "file_size": 1234}))
    assert [(a.mime, a.size, a.name, a.url) for a in voice.attachments] == [
        ("audio/ogg", 1234, "voice.ogg", "http://edge/files/V1")]
    photo = envelope_of(update("", caption="what is this?", photo=[{"file_id": "small"}, {"file_id": "big"}]))
    assert photo.text == "what is this?" and photo.attachments[0].url.endswith("/big")
    document = envelope_of(update("", document={"file_id": "D", "mime_type": "application/pdf", "file_name": "a.pdf"}))
    assert (document.attachments[0].mime, document.attachments[0].name) == ("application/pdf", "a.pdf")


# --- splitting ---------------------------------------------------------------------


def test_long_replies_are_split_at_paragraphs_then_sentences_then_words() -> None:
    paragraph = "First sentence here. " * 150  # ~3150 characters
    text = f"{paragraph.strip()}\n\n{paragraph.strip()}"
    parts = split_text(text, MAX_MESSAGE_CHARS)
    assert [p for p in parts] == [paragraph.strip(), paragraph.strip()]
    sentences = split_text("One two three. Four five six. Seven eight nine.", 32)
    assert sentences == ["One two three. Four five six.", "Seven eight nine."]
    words = split_text("word " * 30, 22)
    assert all(len(p) <= 22 for p in words) and " ".join(words).split() == ["word"] * 30
    assert split_text("x" * 50, 20) == ["x" * 20, "x" * 20, "x" * 10]
    assert split_text("short", 4096) == ["short"]


# --- the webhook -------------------------------------------------------------------


@pytest.fixture
def app(edge_app: EdgeApp) -> Flask:
    return edge_app(telegram_bot_token="123:abc", telegram_webhook_secret=SECRET, telegram_bot_username=BOT,
                    telegram_typing_seconds=0.0)


def celery_of(app: Flask) -> RecordingCelery:
    celery: RecordingCelery = app.extensions["switchboard"].celery
    return celery


def channel_of(app: Flask) -> Telegram:
    channel: Telegram = app.extensions["switchboard.channels"]["telegram"]
    return channel


def hook(client: FlaskClient, body: Any, secret: str | None = SECRET) -> Any:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    return client.post("/v1/channels/telegram", json=body, headers=headers)


def test_a_forged_or_missing_secret_is_refused_before_anything_is_read(client: FlaskClient, app: Flask) -> None:
    assert hook(client, update(), secret="wrong").status_code == 403
    assert hook(client, update(), secret=None).status_code == 403
    assert hook(client, "not even an object", secret="wrong").status_code == 403
    assert celery_of(app).sent == []


def test_an_unconfigured_channel_refuses_everything(settings: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    app = create_app(settings, client=fake_redis, celery=RecordingCelery(fake_redis))
    response = app.test_client().post("/v1/channels/telegram", json=update(), headers={SECRET_HEADER: ""})
    assert response.status_code == 403 and "not configured" in (response.json or {})["error"]


def test_an_update_is_queued_once_however_often_telegram_delivers_it(client: FlaskClient, app: Flask) -> None:
    assert hook(client, update(update_id=5)).status_code == 200
    assert hook(client, update(update_id=5)).status_code == 200
    assert hook(client, update("another", update_id=6)).status_code == 200
    assert len(celery_of(app).sent) == 2


def test_ignored_and_malformed_updates(client: FlaskClient, app: Flask) -> None:
    assert hook(client, {"update_id": 3, "edited_message": {}}).status_code == 200
    assert hook(client, {"no": "update_id"}).status_code == 400
    assert hook(client, [1, 2]).status_code == 400
    assert celery_of(app).sent == []


def test_a_broker_failure_is_503_and_the_redelivery_is_then_accepted(client: FlaskClient, app: Flask) -> None:
    celery_of(app).broken = True
    assert hook(client, update(update_id=9)).status_code == 503
    celery_of(app).broken = False
    assert hook(client, update(update_id=9)).status_code == 200
    assert len(celery_of(app).sent) == 1


def test_a_voice_note_goes_to_the_convert_step_first(client: FlaskClient, app: Flask) -> None:
    assert hook(client, update("", voice={"file_id": "V", "mime_type": "audio/ogg"}, update_id=11)).status_code == 200
    task, args = celery_of(app).sent[0]
    record = app.extensions["switchboard"].messages.get(args[0])
    assert task == CONVERT_ATTACHMENTS and record is not None and record.stage == "converting"
    url = record.envelope["attachments"][0]["url"]
    assert "/v1/channels/telegram/files/V?sig=" in url


def test_file_urls_only_work_with_their_signature(client: FlaskClient, settings: Settings) -> None:
    assert client.get("/v1/channels/telegram/files/V?sig=nope").status_code == 403
    assert client.get("/v1/channels/telegram/files/V").status_code == 403
    assert file_signature(settings.switchboard_secret, "V") != file_signature(settings.switchboard_secret, "W")


# --- sending -------------------------------------------------------------------------


class StubAPI:
    """Records Bot API calls; fails the sendMessage calls listed in ``fail`` (by call number) once each."""

    def __init__(self, fail: dict[int, TelegramError] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail or {}
        self.sends = 0

    def call(self, method: str, payload: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        if method == "sendMessage":
            self.sends += 1
            if self.sends in self.fail:
                raise self.fail.pop(self.sends)
        self.calls.append((method, dict(payload or {})))
        return {"message_id": len(self.calls)}


def reply(text: str, **context: Any) -> CallbackReply:
    return CallbackReply(message_id="r1", session_id="telegram:42", channel="telegram", status="answered",
                         text=text, error=None, context={"chat_id": 42, **context}, created_at="now")


def test_a_failed_part_is_retried_without_resending_the_earlier_ones(app: Flask) -> None:
    channel = channel_of(app)
    stub = StubAPI(fail={2: TelegramError(429, "Too Many Requests", retry_after=3)})
    channel.api = stub  # type: ignore[assignment]
    text = "\n\n".join(["A" * 3000, "B" * 3000, "C" * 3000])
    with pytest.raises(TemporarySendError):
        channel.send(reply(text))
    channel.send(reply(text))
    assert [p["text"][0] for _, p in stub.calls] == ["A", "B", "C"]
    assert all("parse_mode" not in p for _, p in stub.calls)


def test_group_replies_answer_the_asking_message_and_topics_stay_in_their_thread(app: Flask) -> None:
    channel = channel_of(app)
    channel.api = stub = StubAPI()  # type: ignore[assignment]
    channel.send(reply("hi *all* _of_ you", reply_to=7, thread_id=9))
    ((_, payload),) = stub.calls
    assert payload == {"chat_id": 42, "text": "hi *all* _of_ you", "message_thread_id": 9,
                       "reply_parameters": {"message_id": 7, "allow_sending_without_reply": True}}


@pytest.mark.parametrize(("error", "kind"), [
    (TelegramError(403, "Forbidden: bot was blocked by the user"), PermanentSendError),
    (TelegramError(400, "Bad Request: chat not found"), PermanentSendError),
    (TelegramError(502, "Bad Gateway"), TemporarySendError),
    (TelegramError(0, "ConnectionError"), TemporarySendError),
])
def test_provider_errors_map_to_retry_or_give_up(app: Flask, error: TelegramError, kind: type[Exception]) -> None:
    channel = channel_of(app)
    channel.api = StubAPI(fail={1: error})  # type: ignore[assignment]
    with pytest.raises(kind):
        channel.send(reply("hello"))


def test_the_signed_callback_reaches_telegram_once(client: FlaskClient, app: Flask, settings: Settings) -> None:
    channel = channel_of(app)
    channel.api = stub = StubAPI()  # type: ignore[assignment]
    body = json.dumps({"message_id": "r2", "session_id": "telegram:42", "channel": "telegram", "status": "answered",
                       "text": "the answer", "error": None, "context": {"chat_id": 42}, "created_at": "now"})
    for _ in range(2):
        response = client.post("/v1/channels/telegram/callback", data=body,
                               headers=sign_headers(settings.switchboard_secret, "r2", body))
        assert response.status_code == 204
    assert [p["text"] for _, p in stub.calls] == ["the answer"]


def test_set_webhook_refuses_a_secret_telegram_would_reject(settings: Settings) -> None:
    with pytest.raises(SystemExit, match="TELEGRAM_WEBHOOK_SECRET"):
        main(["set-webhook"], settings.replace(telegram_bot_token="1:a", telegram_webhook_secret="has spaces"))
