"""Posting one partial reply to a channel's callback: signed, once, never retried.

A partial is stale as soon as the next one exists, so a failed POST is only
logged: the task that carries it is sent with a short expiry
(``STREAM_PARTIAL_TTL``) and no retries.  The body is the final reply's shape
with ``"type": "message.partial"`` and a sequence number; its ``webhook-id``
is ``<message id>.partial.<seq>``, distinct from the final reply's (the
message id), so the edge's once-per-``webhook-id`` rule for replies is untouched.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from core_worker.outbound_post import post
from outbound_http.host_policy import BlockedURL, HostPolicy, OutboundError
from tasks.schemas import utcnow_iso
from tasks.settings import Settings
from tasks.signing import sign_headers

__all__ = ["PartialPoster", "partial_body", "partial_webhook_id"]

log = logging.getLogger(__name__)


def partial_webhook_id(message_id: str, seq: int) -> str:
    return f"{message_id}.partial.{seq}"


def partial_body(payload: dict[str, Any]) -> str:
    """The JSON a channel callback receives for a partial (docs/api.md, "The callback")."""
    return json.dumps(
        {
            "type": "message.partial",
            "message_id": payload["message_id"],
            "session_id": payload["session_id"],
            "channel": payload["channel"],
            "seq": int(payload["seq"]),
            "text": payload["text"],
            "context": payload.get("context") or {},
            "created_at": utcnow_iso(),
        },
        separators=(",", ":"),
    )


@dataclass
class PartialPoster:
    settings: Settings
    policy: HostPolicy

    def post(self, payload: dict[str, Any]) -> str:
        """One signed POST; what happened, for the task's log line (never raises for HTTP trouble)."""
        if not self.settings.switchboard_secret:
            return "skipped: SWITCHBOARD_SECRET is not set"
        body = partial_body(payload)
        headers = sign_headers(self.settings.switchboard_secret,
                               partial_webhook_id(payload["message_id"], int(payload["seq"])), body)
        headers["user-agent"] = "switchboard-delivery/1"
        try:
            result = post(self.policy, payload["callback_url"], body.encode(), headers,
                          timeout=min(self.settings.delivery_timeout, 5.0), max_response_bytes=4096)
        except (BlockedURL, OutboundError) as exc:
            log.info("partial %s of %s not delivered: %s", payload["seq"], payload["message_id"], exc)
            return f"dropped: {exc}"
        return f"HTTP {result.status}"
