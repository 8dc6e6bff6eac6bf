"""Builders for test data."""

from __future__ import annotations

from typing import Any

from tasks.schemas import Envelope, ReplyRoute, new_message_id


def envelope(session_id: str = "api:alice", text: str = "hello", **overrides: Any) -> Envelope:
    values: dict[str, Any] = {
        "message_id": new_message_id(),
        "channel": "api",
        "channel_message_id": None,
        "sender": "alice",
        "session_id": session_id,
        "text": text,
        "reply": ReplyRoute(callback_url="http://127.0.0.1:9/cb", context={"k": "v"}),
    }
    values.update(overrides)
    return Envelope(**values)
