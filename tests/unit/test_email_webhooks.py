"""The email webhooks through Flask's test client: signatures first, limits, dedupe, attachments."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
from email.message import EmailMessage

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from edge.app import create_app
from tasks.settings import Settings
from tests.support.edge import EdgeApp, RecordingCelery

KEY = "key-mailgun-test"
SECRET = "sendgrid-test-secret"


@pytest.fixture
def app(edge_app: EdgeApp) -> Flask:
    return edge_app(mailgun_signing_key=KEY, sendgrid_inbound_secret=SECRET, max_mail_bytes=200_000)


def raw_mail(message_id: str = "<m1@example.org>", body: str = "Hello there", attachment: bytes = b"") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = (
        "alice@example.org", "bot@example.com", "Hi", message_id
    )
    msg.set_content(body)
    if attachment:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="doc.pdf")
    return msg.as_bytes()


def signed(timestamp: float | None = None, token: str = "tok-1", key: str = KEY) -> dict[str, str]:
    ts = str(int(timestamp if timestamp is not None else time.time()))
    sig = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": ts, "token": token, "signature": sig}


def mailgun(client: FlaskClient, raw: bytes, **sig: str) -> tuple[int, dict[str, object]]:
    # Mailgun posts the raw mail as a plain field; Latin-1 keeps its bytes as they are.
    fields = {**(sig or signed()), "recipient": "bot@example.com", "body-mime": raw.decode("latin-1")}
    response = client.post("/v1/channels/email/mailgun", data=fields, content_type="multipart/form-data")
    return response.status_code, response.get_json()


def basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"sendgrid:{secret}".encode()).decode()}


def test_a_signed_mailgun_mail_is_queued_once(client: FlaskClient, celery_app: RecordingCelery) -> None:
    status, body = mailgun(client, raw_mail())
    assert status == 200 and body["status"] == "queued"
    assert body["session_id"] == "email:alice@example.org#m1@example.org"
    status, again = mailgun(client, raw_mail(), **signed(token="tok-2"))
    assert status == 200 and again["status"] == "duplicate" and again["message_id"] == body["message_id"]
    assert len(celery_app.sent) == 1


def test_forged_stale_and_replayed_mailgun_posts_are_refused(client: FlaskClient) -> None:
    assert mailgun(client, raw_mail(), **signed(key="wrong"))[0] == 403
    assert mailgun(client, raw_mail(), **signed(timestamp=time.time() - 3600))[0] == 403
    assert mailgun(client, raw_mail(), **signed(token="once"))[0] == 200
    status, body = mailgun(client, raw_mail("<m2@example.org>"), **signed(token="once"))
    assert status == 403 and "replay" in str(body["error"])


def test_mailgun_parsed_fields_are_read_too(client: FlaskClient) -> None:
    headers = [["From", "Bob <bob@example.org>"], ["Subject", "Parsed"], ["Message-Id", "<p1@example.org>"]]
    data = {**signed(), "message-headers": json.dumps(headers), "body-plain": "Parsed body",
            "recipient": "bot@example.com", "attachment-1": (io.BytesIO(b"%PDF"), "a.pdf", "application/pdf")}
    response = client.post("/v1/channels/email/mailgun", data=data, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["session_id"] == "email:bob@example.org#p1@example.org"


def test_unconfigured_routes_refuse_everything(
    settings: Settings, fake_redis: fakeredis.FakeRedis, celery_app: RecordingCelery
) -> None:
    client = create_app(settings, client=fake_redis, celery=celery_app).test_client()
    assert client.post("/v1/channels/email/mailgun", data=signed()).status_code == 403
    assert client.post("/v1/channels/email/sendgrid", data={}, headers=basic("")).status_code == 403


def test_sendgrid_raw_mode_with_credentials(client: FlaskClient, celery_app: RecordingCelery) -> None:
    fields = {"email": raw_mail().decode("latin-1"), "envelope": json.dumps({"to": ["bot@example.com"]})}
    assert client.post("/v1/channels/email/sendgrid", data=fields).status_code == 401
    assert client.post("/v1/channels/email/sendgrid", data=fields, headers=basic("nope")).status_code == 403
    response = client.post("/v1/channels/email/sendgrid", data=fields, headers=basic(SECRET),
                           content_type="multipart/form-data")
    assert response.status_code == 200 and response.get_json()["status"] == "queued"


def test_sendgrid_parsed_mode_honours_charsets(client: FlaskClient, app: Flask) -> None:
    fields = {"headers": "From: carol@example.org\nSubject: Hi\nMessage-ID: <c1@example.org>\n",
              "text": "Gr\xfc\xdfe", "charsets": json.dumps({"text": "iso-8859-1"})}
    body = "\r\n".join(
        f'--B\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}' for k, v in fields.items()
    ) + "\r\n--B--\r\n"
    response = client.post("/v1/channels/email/sendgrid", data=body.encode("latin-1"), headers=basic(SECRET),
                           content_type="multipart/form-data; boundary=B")
    assert response.status_code == 200, response.get_json()
    record = app.extensions["switchboard"].messages.get(response.get_json()["message_id"])
    assert record is not None


def test_an_oversized_mail_is_413_json(client: FlaskClient) -> None:
    status, body = mailgun(client, raw_mail(body="x" * 300_000))
    assert status == 413 and body == {"error": "request body is too large"}


def test_a_mail_without_sender_is_422_and_dead_lettered(client: FlaskClient, app: Flask) -> None:
    status, body = mailgun(client, b"Subject: nobody\r\n\r\nhello")
    assert status == 422 and "From" in str(body["error"])
    assert app.extensions["switchboard"].dead_letters.recent()[0]["kind"] == "mail"


def test_auto_replies_are_ignored(client: FlaskClient, celery_app: RecordingCelery) -> None:
    raw = raw_mail().replace(b"Subject: Hi", b"Auto-Submitted: auto-replied\r\nSubject: Hi")
    status, body = mailgun(client, raw)
    assert status == 200 and body["status"] == "ignored" and celery_app.sent == []


def test_attachments_are_stored_and_served_to_allowed_hosts_only(client: FlaskClient, app: Flask) -> None:
    status, _ = mailgun(client, raw_mail(attachment=b"%PDF-1.4 bytes"))
    assert status == 200
    keys = list(app.extensions["switchboard"].redis.keys("*:email:attachment:*"))
    assert len(keys) == 1
    token = keys[0].rsplit(":", 1)[1]
    record = app.extensions["switchboard"].redis.hgetall(keys[0])
    assert "data" not in record and record["size"] == "14"  # the bytes live in FILES_DIR, not in Redis
    got = client.get(f"/v1/channels/email/attachments/{token}")
    assert got.status_code == 200 and got.data == b"%PDF-1.4 bytes" and got.mimetype == "application/pdf"
    far = client.get(f"/v1/channels/email/attachments/{token}", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert far.status_code == 403
    assert client.get("/v1/channels/email/attachments/" + "0" * 32).status_code == 404


def test_a_broker_outage_is_503_and_the_token_can_be_retried(
    client: FlaskClient, celery_app: RecordingCelery
) -> None:
    celery_app.broken = True
    assert mailgun(client, raw_mail(), **signed(token="retry-me"))[0] == 503
    celery_app.broken = False
    assert mailgun(client, raw_mail(), **signed(token="retry-me"))[0] == 200
