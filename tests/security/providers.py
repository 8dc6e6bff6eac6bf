"""How each provider signs a webhook, done the way the provider does it, for the abuse tests.

Every function returns what a test client (or ``requests``) sends: a path,
a body and headers.  ``at`` is the signing time, so a test can make a
stale request without waiting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlencode

from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from tasks.signing import sign_headers

PUBLIC = "https://edge.example.test"
TWILIO_TOKEN = "twilio-auth-token-for-tests"
TELEGRAM_SECRET = "telegram-secret_token-1"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
MAILGUN_KEY = "key-mailgun-for-tests"
SENDGRID_SECRET = "sendgrid-inbound-secret"
REGISTRATION_TOKEN = "helper-registration-token"
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@dataclass(frozen=True)
class Signed:
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/x-www-form-urlencoded"


def twilio(path: str, form: dict[str, str], *, token: str = TWILIO_TOKEN, signed_url: str | None = None) -> Signed:
    """Twilio: HMAC-SHA1 over the URL it called plus the sorted form; no timestamp, no nonce."""
    signature = RequestValidator(token).compute_signature(signed_url or PUBLIC + path, form)
    return Signed(path, urlencode(form).encode(), {"X-Twilio-Signature": signature})


def sms_form(sid: str = "SM0001", sender: str = "+15550001111", body: str = "hello") -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": "AC1", "From": sender, "To": "+15559990000", "Body": body,
            "NumMedia": "0"}


def call_form(call_sid: str = "CA0001", caller: str = "+15550001111", speech: str = "what time is it",
              ) -> dict[str, str]:
    return {"CallSid": call_sid, "AccountSid": "AC1", "From": caller, "To": "+15559990000", "SpeechResult": speech,
            "Confidence": "0.9"}


def telegram(update_id: int = 1, user_id: int = 42, text: str = "hello", *, secret: str = TELEGRAM_SECRET) -> Signed:
    """Telegram: a shared secret echoed in a header; no signature over the body, no timestamp."""
    update = {"update_id": update_id, "message": {
        "message_id": update_id, "date": int(time.time()), "text": text,
        "chat": {"id": user_id, "type": "private"}, "from": {"id": user_id, "is_bot": False, "first_name": "A"}}}
    return Signed("/v1/channels/telegram", json.dumps(update).encode(),
                  {"X-Telegram-Bot-Api-Secret-Token": secret}, "application/json")


def slack(event_id: str = "Ev1", user: str = "U1", text: str = "hi", *, at: float | None = None,
          secret: str = SLACK_SECRET) -> Signed:
    """Slack: HMAC-SHA256 over ``v0:<timestamp>:<body>``; the timestamp must be within five minutes."""
    payload = {"type": "event_callback", "team_id": "T1", "event_id": event_id, "event": {
        "type": "message", "channel_type": "im", "channel": "D1", "user": user, "text": text, "ts": "1.000100"}}
    body = json.dumps(payload)
    timestamp = str(int(at if at is not None else time.time()))
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return Signed("/v1/channels/slack/events", body.encode(),
                  {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}, "application/json")


def mail(message_id: str = "<m1@example.org>", sender: str = "alice@example.org", body: str = "Hello there") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = sender, "bot@example.com", "Hi", message_id
    msg.set_content(body)
    return msg.as_bytes()


def mailgun(path: str = "/v1/channels/email/mailgun/mime", *, token: str = "tok-1", at: float | None = None,
            key: str = MAILGUN_KEY, raw: bytes | None = None) -> Signed:
    """Mailgun: HMAC-SHA256(key, timestamp + token); the token is single-use (the edge remembers it)."""
    timestamp = str(int(at if at is not None else time.time()))
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    form: dict[str, str | bytes] = {"timestamp": timestamp, "token": token, "signature": signature,
                                    "recipient": "bot@example.com", "body-mime": raw or mail()}  # bytes as they are
    return Signed(path, urlencode(form).encode())


def sendgrid(raw: bytes | None = None, *, password: str = SENDGRID_SECRET) -> Signed:
    """SendGrid Inbound Parse: no signature of its own; basic auth carried in the parse URL."""
    auth = base64.b64encode(f"sendgrid:{password}".encode()).decode()
    form: dict[str, str | bytes] = {"email": raw or mail(), "envelope": json.dumps({"to": ["bot@example.com"]})}
    return Signed("/v1/channels/email/sendgrid", urlencode(form).encode(), {"Authorization": f"Basic {auth}"})


def callback(channel: str, webhook_id: str = "msg-1", *, at: datetime | None = None,
             secret: str = CALLBACK_SECRET) -> Signed:
    """The core's reply to a channel callback: Standard Webhooks (id, timestamp, HMAC; 5-minute window)."""
    reply: dict[str, Any] = {"type": "message.reply", "message_id": webhook_id, "session_id": f"{channel}:x",
                             "channel": channel, "status": "answered", "text": "the answer", "error": None,
                             "context": {"chat_id": 42}, "created_at": datetime.now(UTC).isoformat()}
    body = json.dumps(reply)
    headers = sign_headers(secret, webhook_id, body, now=at)
    return Signed(f"/v1/channels/{channel}/callback", body.encode(), headers, "application/json")



def send(client: FlaskClient, signed: Signed) -> Any:
    return client.post(signed.path, data=signed.body, headers=signed.headers, content_type=signed.content_type)
