from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlparse

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from edge.channels.base import CallbackReply
from edge.channels.twilio.normalize import is_goodbye, spoken
from edge.channels.twilio.normalize import normalize_voice as normalize
from edge.channels.twilio.voice import FAILED_TEXT, LOST_TEXT, TOO_SLOW_TEXT, TwilioVoice
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.settings import Settings
from tests.support.edge import EdgeApp, RecordingCelery
from tests.support.fake_twilio import ACCOUNT_SID, PUBLIC, signed_post, twilio_settings

VOICE = f"{PUBLIC}/v1/channels/twilio/voice"
CALLER, OURS = "+15551234567", "+15550000000"


def call_form(call_sid: str = "CA1", **extra: str) -> dict[str, str]:
    return {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "From": CALLER, "To": OURS, "CallStatus": "in-progress",
            **extra}


@pytest.fixture
def app(edge_app: EdgeApp, settings: Settings) -> Flask:
    return edge_app(twilio_settings(settings, twilio_voice_hold_seconds=0.0, twilio_voice_voice="Polly.Joanna"))


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis) -> MessageStore:
    return MessageStore(fake_redis, Keys("sb"), status_ttl=3600, idempotency_ttl=600)


def twiml(response: Any) -> ET.Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/xml"
    return ET.fromstring(response.get_data(as_text=True))


def verbs(document: ET.Element) -> list[str]:
    return [verb.tag for verb in document]


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def speak(client: FlaskClient, speech: str, turn: int = 1, call_sid: str = "CA1") -> ET.Element:
    form = call_form(call_sid, SpeechResult=speech, Confidence="0.93")
    return twiml(signed_post(client, f"{VOICE}/gather?turn={turn}", form))


# --- pure parts -------------------------------------------------------------------------------------------


def test_speech_becomes_an_envelope_in_the_callers_session_without_a_callback() -> None:
    envelope = normalize(call_form("CA9", SpeechResult=" what time is it "), message_id="m1", turn=2)
    assert (envelope.channel, envelope.channel_message_id) == ("twilio-voice", "CA9:2")
    assert envelope.session_id == f"twilio:{CALLER}" and envelope.text == "what time is it"
    assert envelope.reply.callback_url is None  # answers are read out by the wait loop, never delivered
    assert envelope.metadata["call_sid"] == "CA9"


def test_hidden_numbers_get_a_session_per_call_and_sessions_can_be_kept_apart() -> None:
    hidden = {**call_form("CA5"), "From": "anonymous"}
    assert normalize(hidden, message_id="m", turn=1).session_id == "twilio-voice:CA5"
    assert normalize(call_form(), message_id="m", turn=1, shared_session=False).session_id \
        == f"twilio-voice:{CALLER}"


@pytest.mark.parametrize(("speech", "expected"), [
    ("Goodbye.", True), ("okay, bye", True), ("That's all, thank you", False), ("that's all", True),
    ("Bye bye!", True), ("say goodbye to my friend in a long sentence please", False), ("", False),
    ("how do I say bye in French", False),
])
def test_goodbyes_end_short_utterances(speech: str, expected: bool) -> None:
    assert is_goodbye(speech, "goodbye,bye,bye bye,that's all") is expected


def test_answers_are_read_without_markdown_and_cut_at_a_sentence() -> None:
    assert spoken("**Paris** is the [capital](http://x).\n\n# Done", 100) == "Paris is the capital. Done"
    assert spoken("One. Two two two. Three three three three.", 25) == "One. Two two two."


# --- the call ----------------------------------------------------------------------------------------------


def test_a_call_is_greeted_and_listened_to(client: FlaskClient) -> None:
    document = twiml(signed_post(client, VOICE, call_form()))
    assert verbs(document) == ["Gather", "Say", "Hangup"]  # silence falls through to goodbye
    gather = document[0]
    assert gather.attrib["input"] == "speech" and gather.attrib["speechTimeout"] == "auto"
    assert gather.attrib["action"] == f"{VOICE}/gather?turn=1"
    say = gather[0]
    assert say.text == "Hello! This is Switchboard. How can I help?" and say.attrib["voice"] == "Polly.Joanna"


def test_unsigned_voice_webhooks_are_refused(client: FlaskClient, celery_app: RecordingCelery) -> None:
    for path in ("", "/gather?turn=1", "/wait?message_id=x"):
        response = client.post(f"/v1/channels/twilio/voice{path}", data=call_form(SpeechResult="hi"))
        assert response.status_code == 403
    assert celery_app.sent == []


def test_speech_is_queued_and_the_caller_held(client: FlaskClient, celery_app: RecordingCelery) -> None:
    document = speak(client, "what is the weather")
    assert verbs(document) == ["Say", "Redirect"]
    assert document[0].text == "One moment."
    wait_url = document[1].text or ""
    assert wait_url.startswith(f"{VOICE}/wait?")
    assert query(wait_url)["turn"] == "1" and query(wait_url)["n"] == "0"
    assert celery_app.sent[0][1] == [query(wait_url)["message_id"], f"twilio:{CALLER}"]


def test_a_repeated_gather_is_queued_once(client: FlaskClient, celery_app: RecordingCelery) -> None:
    first, again = speak(client, "hi"), speak(client, "hi")
    assert first[1].text == again[1].text and len(celery_app.sent) == 1


@pytest.mark.parametrize("speech", ["", "Goodbye!"])
def test_silence_or_goodbye_hangs_up(client: FlaskClient, celery_app: RecordingCelery, speech: str) -> None:
    document = speak(client, speech)
    assert verbs(document) == ["Say", "Hangup"] and document[0].text == "Goodbye!"
    assert celery_app.sent == []


def wait_once(client: FlaskClient, wait_url: str, call_sid: str = "CA1") -> ET.Element:
    return twiml(signed_post(client, wait_url, call_form(call_sid)))


def test_while_the_model_thinks_the_caller_is_redirected_with_an_occasional_note(client: FlaskClient) -> None:
    wait_url = speak(client, "tell me a story")[1].text or ""
    notes = []
    for loop in range(3):
        document = wait_once(client, wait_url)
        assert verbs(document)[-1] == "Redirect"
        notes.append([v.text for v in document if v.tag == "Say"])
        wait_url = document[-1].text or ""
        assert query(wait_url)["n"] == str(loop + 1)
    assert notes == [[], [], ["Still thinking."]]


def test_the_answer_is_said_and_the_next_turn_listened_to(client: FlaskClient, store: MessageStore) -> None:
    wait_url = speak(client, "what is two plus two")[1].text or ""
    store.update(query(wait_url)["message_id"], status="answered", reply=json.dumps({"text": "**Four.**"}))
    document = wait_once(client, wait_url)
    assert verbs(document) == ["Gather", "Say", "Hangup"]
    assert document[0].attrib["action"] == f"{VOICE}/gather?turn=2"
    assert [say.text for say in document[0]] == ["Four."]


def test_a_failed_message_is_told_politely_and_the_call_goes_on(client: FlaskClient, store: MessageStore) -> None:
    wait_url = speak(client, "break please")[1].text or ""
    store.update(query(wait_url)["message_id"], status="failed", error="boom")
    document = wait_once(client, wait_url)
    assert [say.text for say in document[0]] == [FAILED_TEXT]


def test_a_caller_waits_at_most_the_configured_time(
    client: FlaskClient, store: MessageStore, fake_redis: fakeredis.FakeRedis
) -> None:
    wait_url = speak(client, "something slow")[1].text or ""
    fake_redis.hset(Keys("sb").message(query(wait_url)["message_id"]), "created_at", repr(time.time() - 1000))
    document = wait_once(client, wait_url)
    assert [say.text for say in document[0]] == [TOO_SLOW_TEXT]


def test_another_calls_message_or_an_unknown_one_is_not_read_out(client: FlaskClient, store: MessageStore) -> None:
    wait_url = speak(client, "my secret question", call_sid="CA1")[1].text or ""
    store.update(query(wait_url)["message_id"], status="answered", reply=json.dumps({"text": "secret answer"}))
    for url, call_sid in ((wait_url, "CA2"), (f"{VOICE}/wait?message_id=nope&turn=1", "CA1")):
        document = wait_once(client, url, call_sid)
        assert verbs(document) == ["Say", "Say", "Hangup"] and document[0].text == LOST_TEXT


def test_a_bad_turn_number_is_a_bad_request(client: FlaskClient) -> None:
    response = signed_post(client, f"{VOICE}/gather?turn=abc", call_form(SpeechResult="hi"))
    assert response.status_code == 400 and "turn" in response.get_json()["fields"]


def test_sending_a_voice_reply_is_a_no_op(app: Flask) -> None:
    channel: TwilioVoice = app.extensions["switchboard.channels"]["twilio-voice"]
    channel.send(CallbackReply("m", "s", "twilio-voice", "answered", "hi", None, {}, "now"))
