"""How deliveries end, counted where the deliver task finishes (``switchboard_replies_total``)."""

from __future__ import annotations

from typing import Any

from core_worker.delivery import Outcome
from telemetry import metrics

__all__ = ["reply_outcome"]


def reply_outcome(payload: dict[str, Any], outcome: Outcome) -> None:
    """Count a delivery's end (one line in the deliver task); latency is read at flush time, not here."""
    channel = str(payload.get("channel") or "")
    if outcome is Outcome.DELIVERED:
        metrics.inc("switchboard_replies_total", channel=channel, outcome="delivered")
        metrics.observe_since_admission("switchboard_reply_latency_seconds", str(payload["message_id"]),
                                        channel=channel)
    elif outcome is Outcome.DEAD:
        metrics.inc("switchboard_replies_total", channel=channel, outcome="dead")
