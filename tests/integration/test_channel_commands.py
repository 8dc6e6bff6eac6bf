"""Issue 24 items 1, 2 and 6 through the real system: Telegram with no configured username and a helper registered.

- With ``TELEGRAM_BOT_USERNAME`` unset and one ``getMe`` answering 502, a group message mentioning the bot got
  ``200 {}`` and was never queued: Telegram does not redeliver a 2xx. Now it is a 503, and the redelivered
  update is answered.
- ``/start`` and ``/ask@bot`` became "I don't know a command called 'start'" as soon as any helper was
  registered. Now the channel owns its commands, and a ``/word`` that names no helper is the model's text.

The edge, core and io workers are real processes, Telegram's Bot API a fake over real HTTP, the model the
scripted echo backend (a reply shows what the model was given).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.fake_telegram import BOT_USERNAME, WEBHOOK_SECRET, FakeTelegram, telegram_env
from tests.support.harness import RedisServer, System, system_env, wait_until
from tests.support.scripted_backend import SCRIPTED

pytestmark = pytest.mark.integration

REGISTRATION = "test-registration-token"
_ids = itertools.count(7_000_000)


@pytest.fixture(scope="module")
def system(
    redis_server: RedisServer, secret: str, tiny_model_file: Path, tmp_path_factory: pytest.TempPathFactory,
    fake_telegram: FakeTelegram,
) -> Iterator[System]:
    redis_server.client().flushall()
    env = system_env(
        redis_server.url, secret, tiny_model_file, LLM_BACKEND=SCRIPTED, HELPER_REGISTRATION_TOKEN=REGISTRATION,
        **telegram_env(fake_telegram), CALLBACK_CLAIM_SECONDS="3", DELIVERY_TIMEOUT="4",
        DELIVERY_BACKOFF_BASE="0.5", DELIVERY_BACKOFF_MAX="1",
    )
    system = System(env, tmp_path_factory.mktemp("commands"))
    system.start_all()
    schema = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}
    registered = requests.post(f"{system.base_url}/v1/helpers", timeout=10, headers={
        "Authorization": f"Bearer {REGISTRATION}"}, json={
        "name": "calculator", "url": "http://127.0.0.1:9/never-called", "version": "1", "capabilities": [{
            "name": "calculate", "description": "arithmetic", "input_schema": schema,
            "output_schema": {"type": "object", "properties": {"text": {"type": "string"}}}, "reply": "direct"}]})
    assert registered.status_code == 201, registered.text
    yield system
    system.stop()


def update(chat_id: int, text: str, chat_type: str = "private", update_id: int | None = None) -> dict[str, Any]:
    return {"update_id": update_id or next(_ids), "message": {
        "message_id": next(_ids), "date": 0, "chat": {"id": chat_id, "type": chat_type},
        "from": {"id": 77, "is_bot": False, "first_name": "Test"}, "text": text}}


def hook(system: System, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{system.base_url}/v1/channels/telegram", json=body,
                         headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}, timeout=10)


def answer(fake: FakeTelegram, chat: int) -> str:
    wait_until(lambda: bool(fake.sent(chat)), 40, f"the answer in chat {chat}")
    return str(fake.sent(chat)[0]["text"])


def test_a_group_mention_while_get_me_fails_is_redelivered_not_dropped(
    system: System, fake_telegram: FakeTelegram
) -> None:
    chat = -next(_ids)
    body = update(chat, f"@{BOT_USERNAME} are you there?", chat_type="group")
    fake_telegram.fail_next("getMe", 502, "Bad Gateway")
    refused = hook(system, body)
    assert refused.status_code == 503, refused.text
    assert "getMe" in refused.json()["error"]
    assert hook(system, body).status_code == 200  # Telegram's redelivery of the same update
    assert answer(fake_telegram, chat) == "echo: are you there?"


@pytest.mark.parametrize(("text", "chat_type", "expected"), [
    ("/start", "private", "echo: Hello!"),
    (f"/ask@{BOT_USERNAME} what is the capital of France?", "group", "echo: what is the capital of France?"),
    ("/weather Paris", "private", "echo: /weather Paris"),
    ("/calc 2+2", "private", "I don't know a command called 'calc'. Available: /calculator.calculate."),
])
def test_commands_reach_the_model_unless_they_look_like_a_helper_call(
    system: System, fake_telegram: FakeTelegram, text: str, chat_type: str, expected: str
) -> None:
    chat = next(_ids) if chat_type == "private" else -next(_ids)
    assert hook(system, update(chat, text, chat_type)).status_code == 200
    assert answer(fake_telegram, chat) == expected


def test_a_long_reply_through_a_bot_api_slower_than_every_deadline_is_sent_once(
    system: System, fake_telegram: FakeTelegram
) -> None:
    """Item 6 with a Bot API answering each sendMessage in TELEGRAM_API_TIMEOUT - 1 s (2 of 3 s): three parts
    take 6 s, past the core's 4 s callback deadline (it retries while the send runs) and twice the 3 s send
    claim; every part arrives once, in order."""
    chat = next(_ids)
    paragraph = "This sentence is part of a long answer. " * 60
    text = "\n\n".join([paragraph.strip()] * 3)
    fake_telegram.send_delay = 2.0
    try:
        assert hook(system, update(chat, text)).status_code == 200
        wait_until(lambda: len(fake_telegram.sent(chat)) >= 3, 60, "every part")
        time.sleep(7)  # a repeated send of the reply would be under way by now
    finally:
        fake_telegram.send_delay = 0.0
    parts = [s["text"] for s in fake_telegram.sent(chat)]
    assert len(parts) == 3 and "\n\n".join(parts) == f"echo: {text}"
    retried = [line for line in system.procs["edge"].log().splitlines()
               if '"path": "/v1/channels/telegram/callback"' in line and '"status": 503' in line]
    assert retried, "the core's retries during the send must have met the held claim (503)"
