"""Issue 16's reproductions at the edge: what the workers would refuse is a 4xx naming the field, never a 202.

Each input here was once accepted and then looped in the worker (or answered 500). The worker-side half
(a record that does not load still ends within MAX_ATTEMPTS) is tests/unit/test_poison_path.py.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from edge.api import attachment_name
from tasks.schemas import Attachment, Envelope, EnvelopeSchema
from tests.support.edge import RecordingCelery


def post(client: FlaskClient, **body: Any) -> tuple[int, dict[str, Any]]:
    response = client.post("/v1/messages", json={"user": "alice", "text": "hi", **body})
    return response.status_code, response.get_json()


def test_a_user_and_session_too_long_together_are_refused_naming_the_session(
    client: FlaskClient, celery_app: RecordingCelery
) -> None:
    status, body = post(client, user="u" * 128, session="s" * 128)  # api:tests:<128>#<128> = 267 > 256
    assert status == 400
    assert "at most 245 characters" in body["fields"]["session"][0]
    assert celery_app.sent == []
    status, _ = post(client, user="u" * 128, session="s" * 117)  # exactly 256
    assert status == 202


def test_an_attachment_without_a_name_gets_one_that_fits(client: FlaskClient) -> None:
    url = "http://127.0.0.1:9/files/" + "n" * 400 + "?sig=abc"
    status, body = post(client, attachments=[{"url": url, "mime": "text/plain"}])
    assert status == 202, body
    assert attachment_name(url) == "n" * 255
    assert attachment_name("https://files.example.com/") == "attachment"
    assert attachment_name("https://h.example/a%20b.txt") == "a b.txt"


def test_an_attachment_url_over_2048_characters_is_refused(client: FlaskClient) -> None:
    status, body = post(client, attachments=[{"url": "http://127.0.0.1:9/" + "a" * 2100, "mime": "text/plain"}])
    assert status == 400 and "url" in body["fields"]["attachments"]["0"]


@pytest.mark.parametrize("value", ["²", "٣", "1.5", "-1", "+1", "1e3", " 1", "1234567890"])
def test_a_partial_that_is_not_an_ascii_sequence_number_is_a_400(client: FlaskClient, value: str) -> None:
    _, accepted = post(client)
    response = client.get(f"/v1/messages/{accepted['message_id']}", query_string={"partial": value})
    assert response.status_code == 400 and "partial" in response.get_json()["fields"]


@pytest.mark.parametrize("field", ["user", "session"])
@pytest.mark.parametrize("value", ["alice\n", "alice\r\n", "ali\nce", "alice\u2028"])
def test_user_and_session_refuse_line_breaks(client: FlaskClient, field: str, value: str) -> None:
    status, body = post(client, **{field: value})
    assert status == 400 and field in body["fields"]


def test_every_channel_is_checked_against_the_workers_schema_before_any_2xx(
    app: Any, celery_app: RecordingCelery
) -> None:
    """The backstop in ``edge.intake.accept``: whatever a channel's normaliser built."""
    from edge.context import edge
    from edge.errors import Unprocessable
    from edge.intake import accept

    bad = Envelope(message_id="m1", channel="api", channel_message_id=None, sender="x",
                   session_id="api:" + "x" * 300, text="hi",
                   attachments=(Attachment("text/plain", 1, "n" * 300, "https://h.example/f"),))
    with app.app_context(), pytest.raises(Unprocessable) as refused:
        accept(edge(), bad)
    fields = refused.value.fields["envelope"]  # type: ignore[index]
    assert set(fields) == {"session_id"}  # the 300-character attachment name is cut, not refused
    assert "session_id" in refused.value.error
    assert celery_app.sent == []
    assert EnvelopeSchema().validate(json.loads(json.dumps(bad.to_dict())))  # the very schema the worker loads
    long_name = dataclasses.replace(bad, session_id="api:x")
    with app.app_context():
        accepted = accept(edge(), long_name)
    assert not accepted.duplicate and len(celery_app.sent) == 1


def test_idempotency_keys_are_scoped_unambiguously_per_user(client: FlaskClient) -> None:
    """``user:key`` let ``alice:order`` + ``42`` replay (or swallow) ``alice`` + ``order:42``."""
    def send(user: str, key: str) -> Any:
        return client.post("/v1/messages", json={"user": user, "text": "hi"}, headers={"Idempotency-Key": key})

    theirs, forged = send("alice", "order:42"), send("alice:order", "42")
    assert theirs.status_code == forged.status_code == 202
    assert "Idempotent-Replayed" not in forged.headers
    assert forged.get_json()["message_id"] != theirs.get_json()["message_id"]
    again = send("alice", "order:42")
    assert again.get_json()["message_id"] == theirs.get_json()["message_id"]  # a real retry still replays
