"""Twilio SMS and voice end to end: signed webhooks -> gunicorn edge -> Celery core -> the Twilio API.

The edge, the core and the delivery workers are real processes; Twilio is
``FakeTwilio`` (real HTTP; the real ``twilio`` client is pointed at it) plus
webhooks signed with ``RequestValidator``.  The model is a slow echo
(``slow_backend``), slower than one voice hold loop, so calls really wait.
One system serves the whole module (starting it is most of the cost); each
test uses its own phone numbers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import regex
import requests

from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, Caller, Failure, FakeTwilio, TwilioWebhooks
from tests.support.harness import RedisServer, System, system_env, wait_until
from tests.support.media_files import png_with_text

pytestmark = pytest.mark.integration

TWILIO_NUMBER = "+15550000000"
MODEL_SECONDS = 1.5  # > TWILIO_VOICE_HOLD_SECONDS: every voice answer needs at least one hold loop
MAX_SMS = 160
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one grapheme cluster of 5 code points


def number() -> str:
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


@pytest.fixture(scope="module")
def fake_twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def twilio_system(
    redis_server: RedisServer, secret: str, tiny_model_file: Path, tmp_path_factory: pytest.TempPathFactory,
    fake_twilio: FakeTwilio,
) -> Iterator[System]:
    redis_server.client().flushall()
    env = system_env(
        redis_server.url, secret, tiny_model_file,
        LLM_BACKEND="tests.support.slow_backend:factory",
        SLOW_BACKEND_SECONDS=str(MODEL_SECONDS),
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE_URL=fake_twilio.url,
        TWILIO_API_TIMEOUT="3",
        TWILIO_MAX_SMS_CHARS=str(MAX_SMS),
        TWILIO_VOICE_HOLD_SECONDS="1",
        MEDIA_TWILIO_HOSTS="127.0.0.1",  # the fake serves media like api.twilio.com does
    )
    # Twilio calls the public (TLS) address; the edge behind the "proxy" is plain HTTP on loopback.
    env["PUBLIC_BASE_URL"] = "https://switchboard.example.com"
    system = System(env, tmp_path_factory.mktemp("twilio"))
    system.start_all()
    yield system
    system.stop()


@pytest.fixture
def twilio(fake_twilio: FakeTwilio, twilio_system: System, request: pytest.FixtureRequest) -> Iterator[FakeTwilio]:
    fake_twilio.reset()
    yield fake_twilio
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(twilio_system.logs())


@pytest.fixture
def hooks(twilio_system: System) -> TwilioWebhooks:
    return TwilioWebhooks(AUTH_TOKEN, twilio_system.env["PUBLIC_BASE_URL"], twilio_system.base_url)


def message_for(redis_server: RedisServer, channel: str, delivery_id: str) -> str:
    message_id = redis_server.client().get(f"sb:idem:{channel}:{delivery_id}")
    assert message_id, f"no message for {channel} {delivery_id}"
    return str(message_id)


def status(system: System, message_id: str, wait: float = 0) -> dict[str, Any]:
    return system.channel_status(message_id, wait=wait)


# --- SMS --------------------------------------------------------------------------------------------------------------


def test_an_sms_is_answered_by_text_through_the_twilio_api(twilio: FakeTwilio, hooks: TwilioWebhooks) -> None:
    person = number()
    response = hooks.sms(person, "hello there")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/xml")
    assert "<Message>" not in response.text  # no acknowledgement configured: empty TwiML
    wait_until(lambda: twilio.to(person) != [], 20, "the reply")
    assert [(m.from_, m.body) for m in twilio.sent] == [(TWILIO_NUMBER, "echo: hello there")]


def test_unsigned_forged_and_misaddressed_webhooks_are_refused(
    twilio: FakeTwilio, hooks: TwilioWebhooks, twilio_system: System, redis_server: RedisServer
) -> None:
    person = number()
    unsigned = hooks.sms(person, "hi", sid="SMunsigned", signature=None)
    forged = TwilioWebhooks("not-the-token", hooks.public_base, hooks.edge_base).sms(person, "hi", sid="SMforged")
    # Signed for the URL the edge itself sees (plain http on loopback), not the public one Twilio calls.
    local = TwilioWebhooks(AUTH_TOKEN, twilio_system.base_url, twilio_system.base_url).sms(person, "hi", sid="SMlocal")
    for response in (unsigned, forged, local):
        assert response.status_code == 403, response.text
        assert "error" in response.json()
    assert [redis_server.client().get(f"sb:idem:twilio-sms:SM{kind}") for kind in ("unsigned", "forged", "local")] \
        == [None, None, None]
    time.sleep(MODEL_SECONDS + 1)
    assert twilio.attempts == 0


def test_a_retried_webhook_is_answered_once(
    twilio: FakeTwilio, hooks: TwilioWebhooks, twilio_system: System, redis_server: RedisServer
) -> None:
    person, sid = number(), "SM" + uuid.uuid4().hex
    for _ in range(3):
        assert hooks.sms(person, "are you there?", sid=sid).status_code == 200
    message_id = message_for(redis_server, "twilio-sms", sid)
    assert status(twilio_system, message_id, wait=20)["status"] == "answered"
    wait_until(lambda: twilio.to(person) != [], 20, "the reply")
    time.sleep(1.5)  # a second reply would come now
    assert twilio.to(person) == ["echo: are you there?"]


def test_a_long_reply_is_split_into_numbered_parts_each_sent_once(twilio: FakeTwilio, hooks: TwilioWebhooks) -> None:
    person = number()
    sentences = [f"Sentence number {i} is here to make this text long enough." for i in range(1, 7)]  # two per part
    text = " ".join(sentences)
    twilio.succeed_then_fail(1, Failure(503, message="Service Unavailable"))  # part 2 fails once
    assert hooks.sms(person, text).status_code == 200
    wait_until(lambda: len(twilio.to(person)) >= 3, 30, "all parts")
    time.sleep(1)
    parts = twilio.to(person)
    assert len(parts) == 3 and twilio.attempts == 4  # part 1 was not sent again after part 2 failed
    assert all(len(p) <= MAX_SMS for p in parts)
    assert [p[:6] for p in parts] == ["(1/3) ", "(2/3) ", "(3/3) "]
    assert " ".join(p[6:] for p in parts) == f"echo: {text}"
    assert all(p.endswith(".") for p in parts)  # cut at sentence ends


def test_a_long_reply_of_zwj_sequences_is_split_between_them(twilio: FakeTwilio, hooks: TwilioWebhooks) -> None:
    """Issue 24's reproduction for SMS: parts were cut at the limit wherever it fell, inside a family emoji
    (five code points joined by ZWJ) as inside a flag ("(1/2) …🇺" / "(2/2) 🇸…")."""
    person = number()
    text = FAMILY * 60
    assert hooks.sms(person, text).status_code == 200
    wait_until(lambda: len(twilio.to(person)) >= 3, 30, "all parts")  # 306 code points, 154 a part
    time.sleep(1)
    parts = twilio.to(person)
    assert len(parts) == 3 and all(len(p) <= MAX_SMS for p in parts)
    bodies = [p.split(" ", 1)[1] for p in parts]
    assert [p[:p.index(" ") + 1] for p in parts] == [f"({i}/{len(parts)}) " for i in range(1, len(parts) + 1)]
    assert "".join(bodies).replace(" ", "") == f"echo:{text}"
    assert all(set(regex.findall(r"\X", b)) <= {FAMILY, *"echo: "} for b in bodies)


def test_an_api_outage_is_retried_and_the_reply_delivered_once(
    twilio: FakeTwilio, hooks: TwilioWebhooks, twilio_system: System, redis_server: RedisServer
) -> None:
    person, sid = number(), "SM" + uuid.uuid4().hex
    twilio.down = True  # connections dropped
    assert hooks.sms(person, "during the outage", sid=sid).status_code == 200
    message_id = message_for(redis_server, "twilio-sms", sid)
    assert status(twilio_system, message_id, wait=20)["status"] == "answered"
    time.sleep(2)  # some delivery attempts hit the dead API
    twilio.fail_next(503, times=2)
    twilio.fail_next(429, code=20429, message="Too Many Requests")
    twilio.down = False
    wait_until(lambda: twilio.to(person) != [], 30, "delivery after the outage")
    time.sleep(1.5)
    assert twilio.to(person) == ["echo: during the outage"] and twilio.attempts == 4
    assert status(twilio_system, message_id)["delivery"] == "delivered"


def test_a_reply_twilio_refuses_is_dead_lettered_with_the_reason(
    twilio: FakeTwilio, hooks: TwilioWebhooks, twilio_system: System, redis_server: RedisServer
) -> None:
    person, sid = number(), "SM" + uuid.uuid4().hex
    twilio.fail_next(400, code=21211, message="The 'To' number is not a valid phone number.")
    assert hooks.sms(person, "hello", sid=sid).status_code == 200
    message_id = message_for(redis_server, "twilio-sms", sid)
    wait_until(lambda: status(twilio_system, message_id).get("delivery") == "dead", 30, "the dead letter")
    recent = requests.get(f"{twilio_system.base_url}/v1/status", timeout=10).json()["recent_dead_letters"]
    reason = next(d["reason"] for d in recent if d["message_id"] == message_id)
    assert "21211" in reason and "not a valid phone number" in reason
    assert twilio.attempts == 1 and twilio.sent == []


# --- voice ------------------------------------------------------------------------------------------------------------


def test_a_two_turn_call_with_a_slow_model_shares_the_callers_session(
    twilio: FakeTwilio, hooks: TwilioWebhooks, twilio_system: System, redis_server: RedisServer
) -> None:
    caller = Caller(hooks, number())
    caller.dial()
    assert caller.heard == ["Hello! This is Switchboard. How can I help?"]

    caller.say("what is the capital of France")
    assert caller.heard[1] == "One moment." and caller.heard[-1] == "echo: what is the capital of France"
    assert caller.redirects >= 1  # the model was slower than one hold loop
    caller.say("and of Spain")
    assert caller.heard[-1] == "echo: and of Spain"
    caller.say("OK, goodbye.")
    assert caller.heard[-1] == "Goodbye!" and caller.hung_up
    assert caller.max_request_seconds < 5  # far from Twilio's 15 s webhook timeout

    first = status(twilio_system, message_for(redis_server, "twilio-voice", f"{caller.call_sid}:1"))
    second = status(twilio_system, message_for(redis_server, "twilio-voice", f"{caller.call_sid}:2"))
    assert first["session_id"] == second["session_id"] == f"twilio:{caller.number}"
    assert second["reply"]["context_message_ids"] == [first["message_id"]]
    assert twilio.attempts == 0  # voice needs no REST call


def test_a_caller_hanging_up_mid_answer_is_not_an_error(
    twilio: FakeTwilio, hooks: TwilioWebhooks, twilio_system: System, redis_server: RedisServer
) -> None:
    dead_before = requests.get(f"{twilio_system.base_url}/v1/status", timeout=10).json()["dead_letters"]
    caller = Caller(hooks, number())
    caller.dial()
    redirect = caller.say("tell me a long story", follow=False)
    assert redirect is not None and redirect.tag == "Redirect"
    caller.follow(redirect, once=True)  # one hold loop, then the caller hangs up
    message_id = message_for(redis_server, "twilio-voice", f"{caller.call_sid}:1")

    record = status(twilio_system, message_id, wait=20)
    assert record["status"] == "answered" and "delivery" not in record
    time.sleep(1)
    assert requests.get(f"{twilio_system.base_url}/v1/status", timeout=10).json()["dead_letters"] == dead_before
    assert "Traceback" not in twilio_system.procs["edge"].log()

    again = Caller(hooks, caller.number)  # calls back: the late answer is part of the conversation
    again.dial()
    again.say("where were we")
    assert again.heard[-1] == "echo: where were we"
    later = status(twilio_system, message_for(redis_server, "twilio-voice", f"{again.call_sid}:1"))
    assert later["reply"]["context_message_ids"] == [message_id]
    again.silence()
    assert again.heard[-1] == "Goodbye!" and again.hung_up


def test_an_mms_picture_is_fetched_with_the_accounts_credentials_and_read(
    twilio: FakeTwilio, hooks: TwilioWebhooks
) -> None:
    person = number()
    url = twilio.media_url("ME1", png_with_text(["Meet at gate 42"]), "image/png")
    media = {"NumMedia": "1", "MediaUrl0": url, "MediaContentType0": "image/png"}
    assert hooks.sms(person, "what does this say?", **media).status_code == 200
    wait_until(lambda: twilio.to(person) != [], 60, "the reply")
    [reply] = twilio.to(person)
    assert "[from" in reply and "gate 42" in reply, reply  # OCR of the picture reached the model
    auth = dict(twilio.media_requests)
    assert auth[url.removeprefix(twilio.url)].startswith("Basic ")  # the account's credentials, then the redirect
    assert "/media-store/ME1" in auth
