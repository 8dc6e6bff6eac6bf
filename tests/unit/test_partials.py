"""Partial replies on the edge: one provider message grows by edits, in order, and the final reply takes it over."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from edge.channels.base import CallbackReply, TemporarySendError
from edge.channels.partials import ELLIPSIS, PartialUpdate, partial_text
from edge.channels.slack import Slack
from edge.channels.telegram.bot_api import TelegramError
from edge.channels.telegram.channel import Telegram
from tasks.settings import Settings
from tasks.signing import new_secret, sign_headers
from tests.support.edge import EdgeApp
from tests.support.factories import keyed


class BotAPI:
    """Keeps messages like Telegram: sendMessage makes one, editMessageText changes it (or fails as Telegram does)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.messages: dict[int, str] = {}
        self.fail_next: TelegramError | None = None

    def call(self, method: str, payload: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        body = dict(payload or {})
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.calls.append((method, body))
        if method == "sendMessage":
            message_id = 500 + len(self.messages)
            self.messages[message_id] = body["text"]
            return {"message_id": message_id}
        if method == "editMessageText":
            if body["message_id"] not in self.messages:
                raise TelegramError(400, "Bad Request: message to edit not found")
            self.messages[body["message_id"]] = body["text"]
            return {"message_id": body["message_id"]}
        return True

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]


@pytest.fixture
def app(edge_app: EdgeApp) -> Flask:
    return edge_app(telegram_bot_token="123:abc", telegram_webhook_secret="s3cret", telegram_typing_seconds=0.0,
                    slack_bot_token="xoxb-1", slack_signing_secret="x")


@pytest.fixture
def telegram(app: Flask) -> tuple[Telegram, BotAPI]:
    channel: Telegram = app.extensions["switchboard.channels"]["telegram"]
    channel.api = api = BotAPI()  # type: ignore[assignment]
    return channel, api


def partial(seq: int, text: str, message_id: str = "m1", **context: Any) -> PartialUpdate:
    return PartialUpdate(message_id=message_id, session_id="telegram:42", channel="telegram", seq=seq, text=text,
                         context={"chat_id": 42, **context})


def final(text: str, message_id: str = "m1") -> CallbackReply:
    return CallbackReply(message_id=message_id, session_id="telegram:42", channel="telegram", status="answered",
                         text=text, error=None, context={"chat_id": 42}, created_at="now")


def test_partials_post_once_then_edit_and_the_final_takes_the_message_over(telegram: tuple[Telegram, BotAPI]) -> None:
    channel, api = telegram
    assert channel.send_partial(partial(1, "Once upon")) == "shown"
    assert channel.send_partial(partial(3, "Once upon a time there")) == "shown"
    assert channel.send_partial(partial(2, "Once upon a")) == "stale"  # arrived late: never shown after seq 3
    assert api.methods() == ["sendMessage", "editMessageText"]
    assert api.messages == {500: "Once upon a time there" + ELLIPSIS}
    channel.send(final("Once upon a time there was a bot."))
    assert api.messages == {500: "Once upon a time there was a bot."}  # no second message
    assert channel.send_partial(partial(4, "Once upon a time there was")) == "final"  # too late: ignored
    channel.send(final("Once upon a time there was a bot."))  # a redelivered final repeats nothing
    assert api.methods() == ["sendMessage", "editMessageText", "editMessageText"]


def test_a_long_final_edits_the_first_part_and_sends_the_rest_once(telegram: tuple[Telegram, BotAPI]) -> None:
    channel, api = telegram
    channel.send_partial(partial(1, "A" * 5000))
    assert len(api.messages[500]) <= 4096  # a partial longer than a message shows its start
    text = "\n\n".join(["A" * 3000, "B" * 3000, "C" * 3000])
    api.fail_next = None
    sends = 0

    def flaky(method: str, payload: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        nonlocal sends
        if method == "sendMessage":
            sends += 1
            if sends == 2:  # part 3 fails once
                raise TelegramError(502, "Bad Gateway")
        return BotAPI.call(api, method, payload, timeout)

    api.call = flaky  # type: ignore[method-assign]
    with pytest.raises(TemporarySendError):
        channel.send(final(text))
    channel.send(final(text))
    assert [m[0] for m in api.messages.values()] == ["A", "B", "C"]
    assert api.methods() == ["sendMessage", "editMessageText", "sendMessage", "sendMessage"]


def test_a_rate_limited_partial_pauses_the_partials_and_the_final_is_unaffected(
    telegram: tuple[Telegram, BotAPI],
) -> None:
    channel, api = telegram
    channel.send_partial(partial(1, "Hello there"))
    api.fail_next = TelegramError(429, "Too Many Requests: retry after 30", retry_after=30)
    assert channel.send_partial(partial(2, "Hello there my")) == "rate-limited"
    assert channel.send_partial(partial(3, "Hello there my friend")) == "rate-limited"  # paused, no call made
    channel.send(final("Hello there my friend!"))
    assert api.messages == {500: "Hello there my friend!"}


def test_a_final_whose_partial_message_is_gone_is_sent_anew(telegram: tuple[Telegram, BotAPI]) -> None:
    channel, api = telegram
    channel.send_partial(partial(1, "Hello there"))
    api.messages.clear()  # the person deleted it
    channel.send(final("Hello there, friend"))
    assert list(api.messages.values()) == ["Hello there, friend"]


def test_a_final_waits_for_a_partial_in_flight_and_gives_up_with_a_retry(
    telegram: tuple[Telegram, BotAPI], fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel, api = telegram
    fake_redis.set(channel.shown.key("m1") + ":lock", "someone-else")
    assert channel.send_partial(partial(1, "Hello there")) == "busy"  # dropped: the next one carries more
    monkeypatch.setattr(channel.ctx, "settings", channel.ctx.settings.replace(telegram_api_timeout=0.1))
    with pytest.raises(TemporarySendError):
        channel.send(final("Hello"))
    assert api.calls == []


def test_the_callback_route_takes_signed_partials_only(
    client_app: tuple[FlaskClient, Flask], settings: Settings
) -> None:
    client, app = client_app
    channel: Telegram = app.extensions["switchboard.channels"]["telegram"]
    channel.api = api = BotAPI()  # type: ignore[assignment]
    body = json.dumps({"type": "message.partial", "message_id": "m9", "session_id": "telegram:42",
                       "channel": "telegram", "seq": 1, "text": "Hi the", "context": {"chat_id": 42},
                       "created_at": "now"})
    forged = client.post("/v1/channels/telegram/callback", data=body, headers=sign_headers(new_secret(), "x", body))
    assert forged.status_code == 401 and api.calls == []
    response = client.post("/v1/channels/telegram/callback", data=body,
                           headers=sign_headers(settings.switchboard_secret, "m9.partial.1", body))
    assert response.status_code == 200 and response.get_json() == {"outcome": "shown"}
    bad = body.replace('"seq":1', '"seq":"one"').replace('"seq": 1', '"seq": "one"')
    response = client.post("/v1/channels/telegram/callback", data=bad,
                           headers=sign_headers(settings.switchboard_secret, "m9.partial.x", bad))
    assert response.status_code == 400 and "seq" in response.get_json()["error"]


@pytest.fixture
def client_app(app: Flask) -> Any:
    with keyed(app.test_client()) as client:
        yield client, app


def test_partial_text_marks_the_reply_unfinished_and_fits_the_limit() -> None:
    assert partial_text(" Hello ", 100) == "Hello" + ELLIPSIS
    assert len(partial_text("x" * 500, 100)) == 100


class SlackClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def chat_postMessage(self, **kwargs: Any) -> dict[str, Any]:  # slack_sdk's name
        self.calls.append(("chat.postMessage", kwargs))
        return {"ts": f"17000000{len(self.calls)}.0001"}

    def chat_update(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("chat.update", kwargs))
        return {"ts": kwargs["ts"]}


def test_slack_posts_in_the_thread_updates_it_and_the_final_updates_it_escaped(app: Flask) -> None:
    channel: Slack = app.extensions["switchboard.channels"]["slack"]
    channel._client = stub = SlackClient()  # type: ignore[assignment]
    context = {"channel": "C1", "thread_ts": "1.2"}
    update = PartialUpdate(message_id="s1", session_id="slack:T:C1:1.2", channel="slack", seq=1, text="a <b",
                           context=context)
    assert channel.send_partial(update) == "shown"
    assert channel.send_partial(PartialUpdate(**{**update.__dict__, "seq": 2, "text": "a <b> c"})) == "shown"
    channel.send(CallbackReply(message_id="s1", session_id="slack:T:C1:1.2", channel="slack", status="answered",
                               text="a <b> c & d", error=None, context=context, created_at="now"))
    assert stub.calls == [
        ("chat.postMessage", {"channel": "C1", "text": "a &lt;b" + ELLIPSIS, "thread_ts": "1.2"}),
        ("chat.update", {"channel": "C1", "ts": "170000001.0001", "text": "a &lt;b&gt; c" + ELLIPSIS}),
        ("chat.update", {"channel": "C1", "ts": "170000001.0001", "text": "a &lt;b&gt; c &amp; d"}),
    ]
