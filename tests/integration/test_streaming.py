"""Replies shown while they are written, end to end: gunicorn edge, Celery core and io workers, real Redis.

The model is the slow streaming test backend: it writes its echo word by word
over ``SLOW_BACKEND_SECONDS`` (2 s) and reports progress like the llama.cpp
backend.  Web chat is checked at the API level (partials in long polls before
the answer); Telegram and Slack on their fake servers (one message posted, then
edited, then edited into the exact final text; never a second final message).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.factories import AUTH
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackEvents
from tests.support.fake_telegram import TOKEN, FakeTelegram
from tests.support.harness import RedisServer, System, system_env, wait_until

pytestmark = pytest.mark.integration

TELEGRAM_SECRET = "webhook-secret_0123456789"
QUESTION = "tell me about the quiet harbour town where the fishing boats come home every single evening at dusk"
_ids = itertools.count(5000)


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeTelegram, FakeSlack]]:
    telegram, slack = FakeTelegram(), FakeSlack()
    yield telegram, slack
    telegram.close()
    slack.close()


@pytest.fixture(scope="module")
def system(
    redis_server: RedisServer, secret: str, tiny_model_file: Path, tmp_path_factory: pytest.TempPathFactory,
    fakes: tuple[FakeTelegram, FakeSlack],
) -> Iterator[System]:
    telegram, slack = fakes
    redis_server.client().flushall()
    env = system_env(
        redis_server.url, secret, tiny_model_file,
        LLM_BACKEND="tests.support.slow_backend:streaming_factory", SLOW_BACKEND_SECONDS="2",
        STREAM_INTERVAL_SECONDS="0.3", TELEGRAM_STREAM_INTERVAL="0.5", SLACK_STREAM_INTERVAL="0.5",
        TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_WEBHOOK_SECRET=TELEGRAM_SECRET, TELEGRAM_API_BASE_URL=telegram.url,
        TELEGRAM_API_TIMEOUT="3", TELEGRAM_TYPING_SECONDS="0",
        SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_BASE_URL=slack.url,
        SLACK_API_TIMEOUT="3",
    )
    system = System(env, tmp_path_factory.mktemp("streaming"))
    system.start_all()
    yield system
    system.stop()


def poll(system: System, message_id: str, seq: int) -> dict[str, Any]:
    response = requests.get(f"{system.base_url}/v1/messages/{message_id}", params={"wait": 20, "partial": seq},
                            headers=AUTH, timeout=30)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_web_chat_sees_the_answer_grow_before_it_is_final(system: System) -> None:
    accepted = system.post(user="web-stream", text=QUESTION, stream=True)
    assert accepted.status_code == 202
    message_id = accepted.json()["message_id"]
    partials: list[tuple[int, str]] = []
    seq = 0
    while True:
        record = poll(system, message_id, seq)
        if record["status"] in ("answered", "failed"):
            break
        if "partial" in record:
            assert record["partial"]["seq"] > seq  # a long poll with partial=<seq> returns only for a newer one
            seq = record["partial"]["seq"]
            partials.append((seq, record["partial"]["text"]))
    final = record["reply"]["text"]
    assert record["status"] == "answered" and final == f"echo: {QUESTION}"
    assert "partial" not in record
    assert len(partials) >= 2, partials  # 2 s of writing, a partial at most every 0.3 s
    assert all(final.startswith(text) and len(text) < len(final) for _, text in partials)
    assert [len(text) for _, text in partials] == sorted(len(text) for _, text in partials)


def test_an_api_message_without_stream_shows_no_partials(system: System) -> None:
    message_id = system.post(user="api-plain", text="short question").json()["message_id"]
    time.sleep(1)  # mid-generation
    assert "partial" not in system.status(message_id)
    assert system.status(message_id, wait=20)["reply"]["text"] == "echo: short question"


def telegram_hook(system: System, chat: int, text: str) -> None:
    update = {"update_id": next(_ids), "message": {"message_id": next(_ids), "date": 0,
                                                  "chat": {"id": chat, "type": "private"},
                                                  "from": {"id": chat, "is_bot": False, "first_name": "T"},
                                                  "text": text}}
    response = requests.post(f"{system.base_url}/v1/channels/telegram", json=update,
                             headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}, timeout=10)
    assert response.status_code == 200


def test_telegram_edits_one_message_while_writing_and_ends_with_the_exact_reply(
    system: System, fakes: tuple[FakeTelegram, FakeSlack]
) -> None:
    telegram, _ = fakes
    chat = next(_ids)
    expected = f"echo: {QUESTION}"
    telegram_hook(system, chat, QUESTION)
    wait_until(lambda: telegram.shown(chat) == [expected], 40, "the final reply in the chat")
    time.sleep(1.5)  # a repeated final or a late partial would arrive now
    assert telegram.shown(chat) == [expected]  # one message: the partial one became the reply
    sends = telegram.sent(chat)
    edits = telegram.edits(chat)
    assert len(sends) == 1 and sends[0]["text"].endswith(" …")  # the first partial made the message
    assert expected.startswith(sends[0]["text"].removesuffix(" …"))
    assert edits[-1].payload["text"] == expected and len(edits) >= 2  # partial edits, then the final
    assert all(e.payload["message_id"] == edits[0].payload["message_id"] for e in edits)
    first_shown = next(c.at for c in telegram.calls if c.method == "sendMessage" and c.payload["chat_id"] == chat)
    assert first_shown < edits[-1].at  # partial text was visible before the final


def test_telegram_long_reply_is_edited_into_its_first_part_and_the_rest_sent_once(
    system: System, fakes: tuple[FakeTelegram, FakeSlack]
) -> None:
    telegram, _ = fakes
    chat = next(_ids)
    paragraph = ("This sentence is part of a long answer. " * 60).strip()  # ~2400 characters
    text = "\n\n".join([paragraph] * 2)
    telegram_hook(system, chat, text)
    wait_until(lambda: len(telegram.shown(chat)) == 2 and not telegram.shown(chat)[-1].endswith(" …"), 40,
               "both parts of the reply")
    time.sleep(1.5)
    shown = telegram.shown(chat)
    assert "\n\n".join(shown) == f"echo: {text}" and len(telegram.sent(chat)) == 2


def test_slack_updates_one_message_in_the_thread_and_ends_with_the_exact_reply(
    system: System, fakes: tuple[FakeTelegram, FakeSlack]
) -> None:
    _, slack = fakes
    n = next(_ids)
    channel, ts = f"C{n}", f"{1_700_000_000 + n}.000100"
    events = SlackEvents(system.base_url)
    question = QUESTION + " & <b>"
    assert events.post(SlackEvents.mention(question, event_id=f"Ev{n}", channel=channel, ts=ts)).status_code == 200
    expected = f"echo: {question}".replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    wait_until(lambda: slack.shown(channel) == [expected], 40, "the final reply in the thread")
    time.sleep(1.5)
    assert slack.shown(channel) == [expected]
    posts = slack.in_channel(channel)
    updates = [u for u in slack.updates if u["channel"] == channel]
    assert len(posts) == 1 and posts[0]["thread_ts"] == ts and posts[0]["text"].endswith(" …")
    assert len(updates) >= 2 and updates[-1]["text"] == expected
    assert len({u["ts"] for u in updates}) == 1  # every update went to the one posted message
