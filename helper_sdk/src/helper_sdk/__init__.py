"""Switchboard helper SDK (its own distribution: no Celery, no model code).

The helper issue fills this package: declaring capabilities, the WSGI app,
registration and heartbeats, and test doubles.  Until then it only carries
the signature check every helper needs, so the core's calls can be verified.
"""

from __future__ import annotations

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookVerificationError", "__version__", "verify_core_signature"]

__version__ = "0.1.0"


def verify_core_signature(secret: str, body: bytes, headers: dict[str, str]) -> None:
    """Raise WebhookVerificationError unless the core signed ``body`` with ``secret``."""
    Webhook(secret).verify(body, headers, json_parse=False)
