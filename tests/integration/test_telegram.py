"""Telegram end to end: webhook -> gunicorn edge -> Celery core -> signed callback -> a fake Bot API (real HTTP).

The edge, core and delivery workers are real processes; the model is the
scripted echo backend, so a reply shows what the model was given.  One system
serves the module; each test uses its own chat id.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import regex
import requests

from tests.support.fake_telegram import BOT_USERNAME, WEBHOOK_SECRET, FakeTelegram, telegram_env
from tests.support.harness import BIN, RedisServer, System, system_env, wait_until
from tests.support.media_files import SPEECH, flite_wav, word_error_rate

pytestmark = pytest.mark.integration
FLAG_US = "\U0001f1fa\U0001f1f8"

SECRET = WEBHOOK_SECRET
_ids = itertools.count(1000)


@pytest.fixture(scope="module")
def system(
    redis_server: RedisServer, secret: str, tiny_model_file: Path, tmp_path_factory: pytest.TempPathFactory,
    fake_telegram: FakeTelegram,
) -> Iterator[System]:
    redis_server.client().flushall()
    env = system_env(
        redis_server.url, secret, tiny_model_file,
        LLM_BACKEND="tests.support.scripted_backend:factory",
        **telegram_env(fake_telegram),
    )
    system = System(env, tmp_path_factory.mktemp("telegram"))
    system.start_all()
    yield system
    system.stop()


def update(chat_id: int, text: str = "", update_id: int | None = None, chat_type: str = "private",
           **message: Any) -> dict[str, Any]:
    return {"update_id": update_id or next(_ids), "message": {
        "message_id": next(_ids), "date": 0, "chat": {"id": chat_id, "type": chat_type},
        "from": {"id": chat_id if chat_type == "private" else 77, "is_bot": False, "first_name": "Test"},
        **({"text": text} if text else {}), **message}}


def hook(system: System, body: dict[str, Any], secret: str = SECRET) -> requests.Response:
    return requests.post(f"{system.base_url}/v1/channels/telegram", json=body,
                         headers={"X-Telegram-Bot-Api-Secret-Token": secret}, timeout=10)


def test_a_private_message_is_answered_with_typing_first(system: System, fake_telegram: FakeTelegram) -> None:
    chat = next(_ids)
    assert hook(system, update(chat, "hello bot")).status_code == 200
    wait_until(lambda: len(fake_telegram.sent(chat)) == 1, 30, "the reply")
    (sent,) = fake_telegram.sent(chat)
    assert sent["text"] == "echo: hello bot" and "parse_mode" not in sent
    assert fake_telegram.actions(chat)[0]["action"] == "typing"


def test_a_forged_webhook_is_refused_and_nothing_is_sent(system: System, fake_telegram: FakeTelegram) -> None:
    chat = next(_ids)
    assert hook(system, update(chat, "let me in"), secret="guess").status_code == 403
    assert hook(system, update(chat, "ok then"), secret="").status_code == 403
    time.sleep(1)  # a reply would be sent by now
    assert fake_telegram.sent(chat) == [] and fake_telegram.actions(chat) == []


def test_a_redelivered_update_is_answered_once(system: System, fake_telegram: FakeTelegram) -> None:
    chat = next(_ids)
    body = update(chat, "only once")
    assert hook(system, body).status_code == 200
    assert hook(system, body).status_code == 200
    wait_until(lambda: len(fake_telegram.sent(chat)) >= 1, 30, "the reply")
    another = update(chat, "second message")
    assert hook(system, another).status_code == 200
    wait_until(lambda: len(fake_telegram.sent(chat)) >= 2, 30, "the second reply")
    assert [s["text"] for s in fake_telegram.sent(chat)] == ["echo: only once", "echo: second message"]


def test_a_long_reply_is_split_and_a_rate_limit_is_retried_without_repeats(
    system: System, fake_telegram: FakeTelegram
) -> None:
    chat = next(_ids)
    paragraph = "This sentence is part of a long answer. " * 60  # ~2400 characters
    text = "\n\n".join([paragraph.strip()] * 3)
    fake_telegram.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    assert hook(system, update(chat, text)).status_code == 200
    wait_until(lambda: len(fake_telegram.sent(chat)) >= 3, 40, "every part of the reply")
    time.sleep(1)  # a repeated part would arrive now
    parts = [s["text"] for s in fake_telegram.sent(chat)]
    assert len(parts) == 3 and all(len(p) <= 4096 for p in parts)  # one paragraph each: two would not fit
    assert "\n\n".join(parts) == f"echo: {text}"


def test_a_long_reply_of_flags_is_never_cut_inside_one(system: System, fake_telegram: FakeTelegram) -> None:
    """Issue 24's reproduction: the reply "echo: x🇺🇸…" is 4,101 code points, and the old cut at 4,096 fell
    between the two regional indicators of a flag; every flag of the second part then read 🇸🇺."""
    chat = next(_ids)
    text = "x" + FLAG_US * 2047
    assert hook(system, update(chat, text)).status_code == 200
    wait_until(lambda: len(fake_telegram.sent(chat)) >= 2, 40, "both parts of the reply")
    parts = [s["text"] for s in fake_telegram.sent(chat)]
    assert len(parts) == 2 and all(len(p) <= 4096 for p in parts)
    assert "".join(parts) == f"echo: {text}"
    assert set(regex.findall(r"\X", parts[1])) == {FLAG_US}


def test_group_messages_are_answered_only_when_the_bot_is_mentioned(
    system: System, fake_telegram: FakeTelegram
) -> None:
    group = -next(_ids)
    assert hook(system, update(group, "people talking", chat_type="group")).status_code == 200
    asked = update(group, f"@{BOT_USERNAME} what now?", chat_type="supergroup")
    assert hook(system, asked).status_code == 200
    wait_until(lambda: len(fake_telegram.sent(group)) == 1, 30, "the group reply")
    (sent,) = fake_telegram.sent(group)
    assert sent["text"] == "echo: what now?"
    assert sent["reply_parameters"]["message_id"] == asked["message"]["message_id"]


def test_a_voice_note_is_fetched_through_the_edge_with_get_file_and_transcribed(
    system: System, fake_telegram: FakeTelegram, redis_server: RedisServer, tmp_path: Path
) -> None:
    chat = next(_ids)
    wav, ogg = tmp_path / "speech.wav", tmp_path / "speech.oga"
    flite_wav(wav)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "libopus", str(ogg)], check=True)
    voice = ogg.read_bytes()
    fake_telegram.add_file("VOICE1", "voice/file_1.oga", voice)
    body = update(chat, voice={"file_id": "VOICE1", "mime_type": "audio/ogg", "file_size": len(voice), "duration": 3})
    assert hook(system, body).status_code == 200
    wait_until(lambda: len(fake_telegram.sent(chat)) == 1, 60, "the reply")
    said = fake_telegram.sent(chat)[0]["text"]
    assert "[from voice" in said, said  # transcribed by the convert step, with provenance
    assert word_error_rate(SPEECH, said.split("]", 1)[-1]) <= 0.5, said
    client = redis_server.client()
    envelopes = [json.loads(str(client.hget(k, "envelope") or "{}")) for k in client.scan_iter("sb:msg:*")
                 if client.type(k) == "hash"]
    (envelope,) = [e for e in envelopes if e.get("attachments") and "VOICE1" in e["attachments"][0]["url"]]
    url = str(envelope["attachments"][0]["url"])
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200 and fetched.content == voice
    assert requests.get(url.replace("sig=", "sig=0"), timeout=10).status_code == 403


def test_the_set_webhook_command_registers_the_url_and_secret(system: System, fake_telegram: FakeTelegram) -> None:
    result = subprocess.run([str(BIN / "python"), "-m", "edge.channels.telegram", "set-webhook"], env=system.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert fake_telegram.webhook["url"] == f"{system.base_url}/v1/channels/telegram"
    assert fake_telegram.webhook["secret_token"] == SECRET
    assert fake_telegram.webhook["allowed_updates"] == ["message"]
