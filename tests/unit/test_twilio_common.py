from __future__ import annotations

from flask import Flask

from edge.channels.twilio.common import caller_session, public_url
from tasks.settings import Settings


def test_the_signed_url_is_rebuilt_from_the_public_base_url_whatever_the_edge_sees(settings: Settings) -> None:
    behind_proxy = settings.replace(public_base_url="https://sb.example.com/")
    app = Flask(__name__)
    with app.test_request_context("/v1/channels/twilio/voice/wait?message_id=a%20b&turn=1", method="POST",
                                  base_url="http://127.0.0.1:8000"):
        from flask import request

        assert public_url(behind_proxy, request) == "https://sb.example.com/v1/channels/twilio/voice/wait" \
                                                    "?message_id=a%20b&turn=1"
    with app.test_request_context("/v1/channels/twilio/sms", method="POST"):
        from flask import request

        assert public_url(behind_proxy, request) == "https://sb.example.com/v1/channels/twilio/sms"


def test_only_real_numbers_share_a_session() -> None:
    number = "+447700900123"
    assert caller_session(number, channel="twilio-voice", shared=True, fallback="CA1") == f"twilio:{number}"
    assert caller_session("+447700900123", channel="twilio-voice", shared=False, fallback="CA1") \
        == "twilio-voice:+447700900123"
    assert caller_session("Restricted", channel="twilio-voice", shared=True, fallback="CA1") == "twilio-voice:CA1"
