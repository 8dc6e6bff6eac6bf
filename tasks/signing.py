"""Standard Webhooks signing for every call the system makes to a callback or helper.

The receiver verifies with the ``standardwebhooks`` package (or any
implementation of the spec). ``webhook-id`` is the idempotency key: a
receiver that sees the same id twice must ignore the second one, which is
what makes an at-least-once redelivery safe.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookVerificationError", "new_secret", "sign_headers", "verify"]


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign_headers(secret: str, webhook_id: str, body: str, *, now: datetime | None = None) -> dict[str, str]:
    timestamp = now or datetime.now(UTC)
    signature = Webhook(secret).sign(webhook_id, timestamp, body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def verify(secret: str, body: bytes | str, headers: dict[str, str]) -> None:
    """Raise WebhookVerificationError unless ``headers`` sign ``body`` with ``secret`` (5-minute window)."""
    Webhook(secret).verify(body, headers, json_parse=False)
