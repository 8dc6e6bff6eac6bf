from __future__ import annotations

import pytest

from tasks.schemas import Envelope, Reply, ReplyRoute, ValidationError
from tests.support.factories import envelope


def test_an_envelope_survives_the_round_trip_through_json_data() -> None:
    original = envelope(metadata={"a": 1})
    assert Envelope.from_dict(original.to_dict()) == original


def test_an_envelope_without_a_sender_is_rejected_naming_the_field() -> None:
    data = envelope().to_dict()
    del data["sender"]
    with pytest.raises(ValidationError) as info:
        Envelope.from_dict(data)
    assert "sender" in info.value.messages_dict


def test_a_callback_url_must_be_http() -> None:
    data = envelope().to_dict()
    data["reply"]["callback_url"] = "file:///etc/passwd"
    with pytest.raises(ValidationError):
        Envelope.from_dict(data)


def test_a_reply_round_trips_with_its_status() -> None:
    reply = Reply("m", "s", "hi", "api", ReplyRoute("http://127.0.0.1/x"), status="failed", error="boom")
    assert Reply.from_dict(reply.to_dict()) == reply
