from __future__ import annotations

import json
from collections.abc import Iterator

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from edge.app import create_app
from edge.channels.base import CallbackReply, PermanentSendError, TemporarySendError
from edge.channels.twilio.normalize import keyword, split_message
from edge.channels.twilio.normalize import normalize_sms as normalize
from edge.channels.twilio.sms import TwilioSMS
from edge.errors import BadRequest
from tasks.names import CONVERT_ATTACHMENTS, HANDLE_MESSAGE
from tasks.settings import Settings
from tasks.signing import sign_headers
from tests.support.edge import EdgeApp, RecordingCelery
from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, PUBLIC, Failure, FakeTwilio, signed_post, twilio_settings

SMS_URL = f"{PUBLIC}/v1/channels/twilio/sms"
PERSON, OURS = "+15551234567", "+15550000000"


def sms_form(body: str = "hello", sid: str = "SM1", sender: str = PERSON, **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": ACCOUNT_SID, "From": sender, "To": OURS, "Body": body, "NumMedia": "0",
            **extra}


@pytest.fixture
def app(edge_app: EdgeApp, settings: Settings) -> Flask:
    return edge_app(twilio_settings(settings, twilio_sms_ack=""))


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()
    yield fake
    fake.close()


# --- normalize (pure) ----------------------------------------------------------------------------


def test_an_sms_becomes_an_envelope_in_the_numbers_session() -> None:
    envelope = normalize(sms_form("  hi  ", sid="SMabc"), message_id="m1", callback_url="http://edge/cb")
    assert (envelope.channel, envelope.channel_message_id, envelope.sender) == ("twilio-sms", "SMabc", PERSON)
    assert envelope.session_id == f"twilio:{PERSON}" and envelope.text == "hi"
    assert envelope.reply.callback_url == "http://edge/cb"
    assert envelope.reply.context == {"to": PERSON, "from": OURS}
    assert envelope.attachments == ()


def test_separate_sessions_and_non_numbers_never_share_the_callers_session() -> None:
    assert normalize(sms_form(), message_id="m", callback_url=None, shared_session=False).session_id \
        == f"twilio-sms:{PERSON}"
    assert normalize(sms_form(sender="TWILIO"), message_id="m", callback_url=None).session_id == "twilio-sms:TWILIO"


def test_mms_media_become_attachments() -> None:
    form = sms_form("look", NumMedia="2", MediaUrl0="https://api.twilio.com/m/0", MediaContentType0="image/jpeg",
                    MediaUrl1="https://api.twilio.com/m/1", MediaContentType1="not a type")
    envelope = normalize(form, message_id="m", callback_url=None)
    assert [(a.mime, a.url) for a in envelope.attachments] == [
        ("image/jpeg", "https://api.twilio.com/m/0"), ("application/octet-stream", "https://api.twilio.com/m/1")]
    assert envelope.attachments[0].name.startswith("media0.")
    assert envelope.metadata["kind"] == "mms"


def test_a_form_without_the_twilio_fields_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as error:
        normalize({"Body": "hi"}, message_id="m", callback_url=None)
    assert set(error.value.fields or {}) == {"MessageSid", "From", "To"}


@pytest.mark.parametrize(("body", "expected"), [
    ("STOP", "stop"), ("stop.", "stop"), (" Unsubscribe ", "stop"), ("cancel", "stop"), ("START", "start"),
    ("unstop", "start"), ("HELP", "help"), ("info", "help"), ("stop the music", None), ("yes", None), ("hi", None),
])
def test_keywords_are_whole_messages(body: str, expected: str | None) -> None:
    assert keyword(body) == expected


def test_yes_resubscribes_only_someone_who_opted_out_and_twilios_own_decision_wins() -> None:
    assert keyword("Yes", opted_out=True) == "start"
    assert keyword("whatever", "STOP") == "stop"


# --- splitting ----------------------------------------------------------------------------------------


def test_a_short_reply_is_one_part() -> None:
    assert split_message("  short  ", 160) == ["short"]


def test_a_long_reply_splits_at_sentences_within_the_limit_and_is_numbered() -> None:
    text = " ".join(f"This is sentence {i}, which is fairly ordinary." for i in range(12))
    parts = split_message(text, 160)
    assert len(parts) > 1 and all(len(p) <= 160 for p in parts)
    assert [p.split(" ", 1)[0] for p in parts] == [f"({i}/{len(parts)})" for i in range(1, len(parts) + 1)]
    assert all(p.endswith(".") for p in parts)
    assert " ".join(p.split(" ", 1)[1] for p in parts) == text
    assert split_message(text, 160) == parts  # deterministic: a retry computes the same parts


def test_paragraphs_are_preferred_over_sentences_and_words_over_hard_cuts() -> None:
    text = "First paragraph. It has two sentences.\n\nSecond paragraph is here. " + "word " * 30
    parts = split_message(text, 80, numbered=False)
    assert parts[0] == "First paragraph. It has two sentences."
    assert all(len(p) <= 80 for p in parts)
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in parts)
    assert split_message("x" * 250, 100, numbered=False) == ["x" * 100, "x" * 100, "x" * 50]


def test_numbering_makes_room_for_two_digit_part_counts() -> None:
    parts = split_message("word " * 200, 60)
    assert len(parts) >= 10 and all(len(p) <= 60 for p in parts)
    assert parts[0].startswith(f"(1/{len(parts)}) ")


# --- webhook --------------------------------------------------------------------------------------------


def test_a_signed_sms_is_queued_and_answered_with_empty_twiml(
    client: FlaskClient, celery_app: RecordingCelery
) -> None:
    response = signed_post(client, SMS_URL, sms_form())
    assert response.status_code == 200 and response.mimetype == "text/xml"
    assert "<Message>" not in response.get_data(as_text=True)
    assert [(name, args[1]) for name, args in celery_app.sent] == [(HANDLE_MESSAGE, f"twilio:{PERSON}")]


@pytest.mark.parametrize("headers", [{}, {"X-Twilio-Signature": "bm90IGl0"}])
def test_unsigned_or_forged_webhooks_are_403(
    client: FlaskClient, celery_app: RecordingCelery, headers: dict[str, str]
) -> None:
    response = client.post("/v1/channels/twilio/sms", data=sms_form(), headers=headers)
    assert response.status_code == 403 and "error" in response.get_json()
    assert celery_app.sent == []


def test_a_signature_over_another_url_or_token_is_403(client: FlaskClient) -> None:
    local_url = "http://localhost/v1/channels/twilio/sms"  # what the edge sees behind TLS termination
    signature = RequestValidator(AUTH_TOKEN).compute_signature(local_url, sms_form())
    response = client.post("/v1/channels/twilio/sms", data=sms_form(), headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    assert signed_post(client, SMS_URL, sms_form(), token="other-token").status_code == 403


def test_a_signed_query_string_is_part_of_the_url(client: FlaskClient, celery_app: RecordingCelery) -> None:
    assert signed_post(client, f"{SMS_URL}?source=main", sms_form()).status_code == 200
    assert len(celery_app.sent) == 1


def test_without_an_auth_token_every_webhook_is_refused(
    settings: Settings, fake_redis: fakeredis.FakeRedis, celery_app: RecordingCelery
) -> None:
    app = create_app(twilio_settings(settings).replace(twilio_auth_token=""), client=fake_redis, celery=celery_app)
    response = app.test_client().post("/v1/channels/twilio/sms", data=sms_form(),
                                      headers={"X-Twilio-Signature": "anything"})
    assert response.status_code == 403
    assert response.get_json() == {"error": "Twilio channel not configured"}


def test_a_retried_webhook_is_queued_once(client: FlaskClient, celery_app: RecordingCelery) -> None:
    for _ in range(3):
        assert signed_post(client, SMS_URL, sms_form(sid="SMsame")).status_code == 200
    assert len(celery_app.sent) == 1


def test_the_acknowledgement_is_sent_once(
    settings: Settings, fake_redis: fakeredis.FakeRedis, celery_app: RecordingCelery
) -> None:
    app = create_app(twilio_settings(settings, twilio_sms_ack="Got it, thinking..."), client=fake_redis,
                     celery=celery_app)
    with app.test_client() as client:
        first = signed_post(client, SMS_URL, sms_form(sid="SMack")).get_data(as_text=True)
        again = signed_post(client, SMS_URL, sms_form(sid="SMack")).get_data(as_text=True)
    assert "<Message>Got it, thinking...</Message>" in first and "<Message>" not in again


def test_stop_is_never_sent_to_the_model_and_silences_the_number_until_start(
    client: FlaskClient, celery_app: RecordingCelery
) -> None:
    assert signed_post(client, SMS_URL, sms_form("STOP", sid="SM1")).status_code == 200
    signed_post(client, SMS_URL, sms_form("are you there?", sid="SM2"))
    assert celery_app.sent == []
    signed_post(client, SMS_URL, sms_form("START", sid="SM3"))
    signed_post(client, SMS_URL, sms_form("hello again", sid="SM4"))
    assert len(celery_app.sent) == 1


def test_help_gets_the_configured_text_once_and_never_the_model(
    settings: Settings, fake_redis: fakeredis.FakeRedis, celery_app: RecordingCelery
) -> None:
    app = create_app(twilio_settings(settings, twilio_sms_help="Text anything; STOP to stop."), client=fake_redis,
                     celery=celery_app)
    with app.test_client() as client:
        first = signed_post(client, SMS_URL, sms_form("HELP", sid="SMh")).get_data(as_text=True)
        again = signed_post(client, SMS_URL, sms_form("HELP", sid="SMh")).get_data(as_text=True)
    assert "<Message>Text anything; STOP to stop.</Message>" in first and "<Message>" not in again
    assert celery_app.sent == []


def test_mms_media_go_to_the_convert_step_once(
    client: FlaskClient, celery_app: RecordingCelery, settings: Settings
) -> None:
    media = {"NumMedia": "1", "MediaUrl0": "https://api.twilio.com/m/0", "MediaContentType0": "image/png"}
    first = signed_post(client, SMS_URL, sms_form("", sid="SMm1", **media)).get_data(as_text=True)
    signed_post(client, SMS_URL, sms_form("", sid="SMm1", **media))  # Twilio retries the webhook
    assert "<Message>" not in first
    assert [name for name, _ in celery_app.sent] == [CONVERT_ATTACHMENTS]


# --- sending ----------------------------------------------------------------------------------------------


def channel_for(app: Flask) -> TwilioSMS:
    channel: TwilioSMS = app.extensions["switchboard.channels"]["twilio-sms"]
    return channel


def reply(text: str = "hi there", message_id: str = "m1", status: str = "answered") -> CallbackReply:
    return CallbackReply(message_id=message_id, session_id=f"twilio:{PERSON}", channel="twilio-sms", status=status,
                         text=text, error=None, context={"to": PERSON, "from": OURS}, created_at="now")


@pytest.fixture
def sms_app(settings: Settings, fake_redis: fakeredis.FakeRedis, fake_twilio: FakeTwilio) -> Flask:
    return create_app(twilio_settings(settings, twilio_api_base_url=fake_twilio.url, twilio_max_sms_chars=60,
                                      twilio_api_timeout=2.0), client=fake_redis, celery=RecordingCelery(fake_redis))


@pytest.fixture
def sms(sms_app: Flask) -> TwilioSMS:
    return channel_for(sms_app)


def test_a_reply_is_texted_from_the_number_the_person_texted(sms: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    sms.send(reply("hi there"))
    assert [(m.to, m.from_, m.body) for m in fake_twilio.sent] == [(PERSON, OURS, "hi there")]


def test_a_failed_status_is_still_texted_as_the_polite_notice(sms: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    sms.send(reply("Sorry, I could not answer that message.", status="failed"))
    assert fake_twilio.to(PERSON) == ["Sorry, I could not answer that message."]


def test_twilio_from_number_overrides_the_reply_number(
    settings: Settings, fake_redis: fakeredis.FakeRedis, fake_twilio: FakeTwilio
) -> None:
    app = create_app(twilio_settings(settings, twilio_api_base_url=fake_twilio.url, twilio_from_number="+15559999999"),
                     client=fake_redis, celery=RecordingCelery(fake_redis))
    channel_for(app).send(reply())
    assert fake_twilio.sent[0].from_ == "+15559999999"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limits_and_server_errors_are_temporary(sms: TwilioSMS, fake_twilio: FakeTwilio, status: int) -> None:
    fake_twilio.fail_next(status)
    with pytest.raises(TemporarySendError):
        sms.send(reply())
    sms.send(reply())
    assert fake_twilio.to(PERSON) == ["hi there"]


def test_an_unreachable_api_is_temporary(sms: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    fake_twilio.down = True
    with pytest.raises(TemporarySendError, match="unreachable"):
        sms.send(reply())


def test_other_client_errors_are_permanent_with_twilios_reason(sms: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(400, code=21211, message="The 'To' number is not a valid phone number.")
    with pytest.raises(PermanentSendError, match=r"21211.*not a valid phone number"):
        sms.send(reply())


def test_a_retry_after_a_failed_part_does_not_resend_the_earlier_parts(
    sms: TwilioSMS, fake_twilio: FakeTwilio
) -> None:
    text = "One sentence here. Another sentence there. A third one follows. And the last one ends it."
    fake_twilio.succeed_then_fail(1, Failure(503))
    with pytest.raises(TemporarySendError):
        sms.send(reply(text))
    sms.send(reply(text))
    parts = split_message(text, 60)
    assert fake_twilio.to(PERSON) == parts and len(parts) == 2 and fake_twilio.attempts == 3


def test_an_opted_out_number_gets_no_reply(sms_app: Flask, sms: TwilioSMS, fake_twilio: FakeTwilio) -> None:
    with sms_app.test_client() as client:
        signed_post(client, SMS_URL, sms_form("STOP"))
    sms.send(reply())  # returns normally: nothing to retry
    assert fake_twilio.sent == []


def test_without_credentials_a_reply_is_refused_for_good(
    settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    app = create_app(settings, client=fake_redis, celery=RecordingCelery(fake_redis))
    with pytest.raises(PermanentSendError, match="not configured"):
        channel_for(app).send(reply())


def test_the_signed_callback_route_texts_the_reply(
    settings: Settings, fake_redis: fakeredis.FakeRedis, fake_twilio: FakeTwilio
) -> None:
    app = create_app(twilio_settings(settings, twilio_api_base_url=fake_twilio.url), client=fake_redis,
                     celery=RecordingCelery(fake_redis))
    body = json.dumps({"type": "message.reply", "message_id": "m9", "session_id": f"twilio:{PERSON}",
                       "channel": "twilio-sms", "status": "answered", "text": "the answer", "error": None,
                       "context": {"to": PERSON, "from": OURS}, "created_at": "now"})
    headers = sign_headers(settings.switchboard_secret, "m9", body)
    with app.test_client() as client:
        assert client.post("/v1/channels/twilio-sms/callback", data=body, headers=headers).status_code == 204
        assert client.post("/v1/channels/twilio-sms/callback", data=body, headers=headers).status_code == 204
    assert fake_twilio.to(PERSON) == ["the answer"]
