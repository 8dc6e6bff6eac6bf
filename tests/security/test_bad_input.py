"""Oversized, malformed and strangely encoded requests: a JSON error naming the problem, never a 500.

Run against the app in-process (every channel configured, signatures
valid where a route needs one, so the bad part is what is tested).  The
same classes of input through real gunicorn (huge headers, a body cut
short) are in test_edge_abuse.py.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tasks.signing import sign_headers
from tests.security import providers
from tests.security.providers import send
from tests.support.edge import RecordingCelery
from tests.support.factories import keyed

LIMIT = 4096  # MAX_BODY_BYTES in these tests; the other limits are set to match below
Request = Callable[[FlaskClient], TestResponse]


@dataclass(frozen=True)
class Case:
    name: str
    request: Request
    status: int
    mentions: str = ""  # a word the error message must contain

    def __str__(self) -> str:
        return self.name


def api(body: bytes | str, content_type: str = "application/json", **headers: str) -> Request:
    return lambda c: c.post("/v1/messages", data=body, content_type=content_type, headers=headers)


def api_json(**fields: Any) -> Request:
    return api(json.dumps({"user": "alice", "text": "hi", **fields}))


def upload(data: dict[str, Any] | bytes, content_type: str = "multipart/form-data") -> Request:
    return lambda c: c.post("/v1/files", data=data, content_type=content_type)


def signed(make: Callable[[], providers.Signed]) -> Request:
    return lambda c: send(c, make())


def slack_raw(body: bytes) -> providers.Signed:
    good = providers.slack()
    timestamp = good.headers["X-Slack-Request-Timestamp"]
    signature = "v0=" + hmac.new(providers.SLACK_SECRET.encode(), f"v0:{timestamp}:".encode() + body,
                                 hashlib.sha256).hexdigest()
    return providers.Signed(good.path, body, {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature},
                            "application/json")


def callback_raw(body: bytes) -> providers.Signed:
    headers = sign_headers(providers.CALLBACK_SECRET, "bad-1", body.decode("latin-1"))
    return providers.Signed("/v1/channels/telegram/callback", body.decode("latin-1").encode(), headers,
                            "application/json")


DEEP = "[" * 1_500 + "]" * 1_500  # deeper than the interpreter's recursion limit, within MAX_BODY_BYTES
MULTIPART_GARBAGE = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nno end"

CASES = [
    # the JSON API
    Case("body over MAX_BODY_BYTES", api(json.dumps({"user": "a", "text": "x" * 10 * LIMIT})), 413, "too large"),
    Case("not JSON content type", api("user=a&text=hi", "application/x-www-form-urlencoded"), 415, "JSON"),
    Case("malformed JSON", api('{"user": "a", "text": '), 400, "JSON object"),
    Case("a JSON array", api("[1, 2]"), 400, "JSON object"),
    Case("non-UTF-8 bytes", api(b'{"user": "a", "text": "\xff\xfe\xfd"}'), 400),
    Case("nested 1,500 deep", api(DEEP), 400, "nested"),
    Case("nested inside metadata", api('{"user": "a", "text": "x", "metadata": {"m": ' + DEEP + "}}"), 400, "nested"),
    Case("a lone surrogate", api('{"user": "a", "text": "\\ud800"}'), 400, "Unicode"),
    Case("a user of 1,000 characters", api_json(user="u" * 1_000), 400, "invalid fields"),
    Case("a user with a slash", api_json(user="../../etc"), 400, "invalid fields"),
    Case("text over MAX_TEXT_CHARS", api_json(text="x" * 2_000), 400, "invalid fields"),
    Case("an unknown field", api_json(admin=True), 400, "invalid fields"),
    Case("eleven attachments", api_json(attachments=[{"url": "http://127.0.0.1/a", "mime": "text/plain"}] * 11),
         400, "invalid fields"),
    Case("a huge Idempotency-Key", api(json.dumps({"user": "a", "text": "x"}), **{"Idempotency-Key": "k" * 300}),
         400, "Idempotency-Key"),
    Case("wait is not a number", lambda c: c.get("/v1/messages/abc?wait=soon"), 400, "wait"),
    Case("wait is infinite", lambda c: c.get("/v1/messages/abc?wait=1e999"), 400, "wait"),
    Case("wait is NaN", lambda c: c.get("/v1/messages/abc?wait=nan"), 400, "wait"),
    Case("a 10,000-character message id", lambda c: c.get("/v1/messages/" + "a" * 10_000), 404),
    # uploads
    Case("upload over FILES_MAX_BYTES", upload({"user": "a", "file": (io.BytesIO(b"x" * 3 * LIMIT), "a.txt")}), 413),
    Case("upload not multipart", upload(b'{"user": "a"}', "application/json"), 415, "multipart"),
    Case("multipart cut short", upload(MULTIPART_GARBAGE, "multipart/form-data; boundary=B"), 400),
    Case("upload of an empty file", upload({"user": "a", "file": (io.BytesIO(b""), "a.txt")}), 400),
    Case("upload of a refused type", upload({"user": "a", "file": (io.BytesIO(b"MZ"), "a.exe",
                                                                   "application/x-msdownload")}), 415),
    Case("upload without a user", upload({"file": (io.BytesIO(b"hi"), "a.txt")}), 400, "invalid fields"),
    # mail
    Case("mail over MAX_MAIL_BYTES", signed(lambda: providers.mailgun(raw=providers.mail(body="x" * 10 * LIMIT))),
         413),
    Case("mail as JSON", lambda c: c.post("/v1/channels/email/mailgun", json={"a": 1}), 415),
    Case("mail multipart without a boundary",
         lambda c: c.post("/v1/channels/email/mailgun", data=b"x", content_type="multipart/form-data"), 400),
    Case("sendgrid multipart cut short",
         lambda c: c.post("/v1/channels/email/sendgrid", data=MULTIPART_GARBAGE,
                          content_type="multipart/form-data; boundary=B", headers=providers.sendgrid().headers), 400),
    # chat providers (signed, so the body is what is wrong)
    Case("telegram: not JSON", lambda c: c.post("/v1/channels/telegram", data=b"\xff",
                                                headers=providers.telegram().headers), 400),
    Case("telegram: nested deep", lambda c: c.post("/v1/channels/telegram", data=DEEP, content_type="application/json",
                                                   headers=providers.telegram().headers), 400),
    Case("telegram: update_id not a number",
         lambda c: c.post("/v1/channels/telegram", json={"update_id": "1"}, headers=providers.telegram().headers), 400),
    Case("slack: signed, not JSON", signed(lambda: slack_raw(b"not json")), 400),
    Case("slack: not UTF-8 (cannot be signed)", signed(lambda: slack_raw(b"\xff\xfe not json")), 403),
    Case("slack: signed, nested deep", signed(lambda: slack_raw(DEEP.encode())), 400),
    Case("twilio: signed, no From", signed(lambda: providers.twilio("/v1/channels/twilio/sms", {"MessageSid": "S"})),
         400, "missing"),
    Case("twilio: turn not a number", signed(lambda: providers.twilio("/v1/channels/twilio/voice/gather?turn=x",
                                                                      providers.call_form())), 400, "turn"),
    Case("callback: signed, not JSON", signed(lambda: callback_raw(b"\xff not json")), 400),
    Case("callback: signed, not a reply", signed(lambda: callback_raw(b'{"text": 1}')), 400),
    # helper registration
    Case("manifest with 33 capabilities", lambda c: c.post("/v1/helpers", headers={
        "Authorization": f"Bearer {providers.REGISTRATION_TOKEN}"}, json={
        "name": "big", "url": "http://127.0.0.1:9", "version": "1", "capabilities": [
            {"name": f"c{i}", "description": "x", "input_schema": {"type": "object"},
             "output_schema": {"type": "object"}} for i in range(33)]}), 400, "manifest"),
    Case("manifest with a broken JSON Schema", lambda c: c.post("/v1/helpers", headers={
        "Authorization": f"Bearer {providers.REGISTRATION_TOKEN}"}, json={
        "name": "bad", "url": "http://127.0.0.1:9", "version": "1", "capabilities": [
            {"name": "c", "description": "x", "input_schema": {"type": "object", "properties": 5},
             "output_schema": {"type": "object"}}]}), 400, "manifest"),
    # routing
    Case("an unknown route", lambda c: c.post("/v1/nothing-here", json={}), 404),
    Case("a wrong method", lambda c: c.delete("/v1/messages"), 405),
]


@pytest.fixture
def small_client(make_app: Any) -> FlaskClient:
    app = make_app(max_body_bytes=LIMIT, max_text_chars=1_000, files_max_bytes=2 * LIMIT,
                   max_mail_bytes=4 * LIMIT, files_allowed_types="text/*,image/*")
    client: FlaskClient = keyed(app.test_client())
    return client


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_gets_a_json_error_naming_the_problem(
    small_client: FlaskClient, celery_app: RecordingCelery, case: Case
) -> None:
    response = case.request(small_client)
    assert response.status_code == case.status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], response.get_data()
    assert case.mentions in body["error"]
    assert celery_app.sent == []  # nothing bad was queued


def test_mail_in_another_charset_or_broken_mime_is_queued_or_refused_never_a_500(
    small_client: FlaskClient, celery_app: RecordingCelery
) -> None:
    latin1 = (b"From: ana@example.org\r\nTo: bot@example.com\r\nSubject: =?iso-8859-1?q?Gr=FC=DFe?=\r\n"
              b"Message-ID: <l1@example.org>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
              b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe aus K\xf6ln\r\n")
    broken = (b"From: bob@example.org\r\nMessage-ID: <b1@example.org>\r\nContent-Type: multipart/mixed\r\n\r\n"
              b"--nothing\r\n\xff\xfe\x00garbage")
    no_sender = b"Subject: who am I\r\n\r\nbody"
    statuses = [send(small_client, providers.mailgun(token=f"t{i}", raw=raw)).status_code
                for i, raw in enumerate((latin1, broken, no_sender))]
    assert statuses[0] == 200 and statuses[1] in (200, 422) and statuses[2] == 422
    assert 1 <= len(celery_app.sent) <= 2
