"""What every provider channel is: webhooks in, a signed callback out.

A channel (one module per provider, like Rasa's ``InputChannel``/``OutputChannel``
in one class) gives:
- ``blueprint()``: its provider webhooks under ``/v1/channels/<name>/…``; each view
  verifies the provider's signature first, then builds an ``Envelope`` with a
  pure ``normalize`` function and calls ``self.accept`` (durable enqueue, dedupe on
  the provider's delivery id);
- ``send(reply)``: how a finished reply reaches the person (Twilio REST, SMTP, …).
  The core POSTs every reply to ``/v1/channels/<name>/callback`` (signed); the
  callback route (``edge/channels/callback.py``) verifies it, drops a repeated
  ``webhook-id`` and calls ``send``.  ``send`` raises ``TemporarySendError`` for
  what is worth retrying (the core retries with backoff) and
  ``PermanentSendError`` for what is not (dead-lettered with the reason);
- ``send_partial(update)``: optional, for providers that can edit a sent message
  (Telegram, Slack): show a reply while it is written (``edge/channels/partials.py``).
  A channel that streams sets ``ReplyRoute.stream_interval`` on its envelopes.

A reply longer than one provider message goes out in parts through ``send_parts``
(each part recorded in Redis once sent, so a retry resumes after the last part
that went out; on a streaming channel the first part takes over the message that
showed the partial text, ``take_over_partial``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from flask import Blueprint

from edge.channels.partials import PartialBusy, PartialUpdate, ShownReplies
from edge.context import EdgeContext
from edge.intake import Accepted, accept
from tasks.schemas import Envelope

__all__ = ["CallbackReply", "Channel", "PermanentSendError", "SendError", "TemporarySendError"]


class SendError(Exception):
    """A reply could not be handed to the provider."""


class TemporarySendError(SendError):
    """Worth retrying later (provider 429/5xx, network)."""


class PermanentSendError(SendError):
    """Retrying will not help (invalid number, blocked recipient, 4xx)."""


@dataclass(frozen=True)
class CallbackReply:
    """The body of the core's callback (see docs/api.md, "The callback")."""

    message_id: str
    session_id: str
    channel: str
    status: str  # "answered" | "failed"
    text: str
    error: str | None
    context: dict[str, Any]  # what the channel put in Envelope.reply.context
    created_at: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> CallbackReply:
        return cls(
            message_id=str(body["message_id"]), session_id=str(body["session_id"]), channel=str(body["channel"]),
            status=str(body["status"]), text=str(body["text"]), error=body.get("error"),
            context=dict(body.get("context") or {}), created_at=str(body.get("created_at", "")),
        )


class Channel(ABC):
    name: ClassVar[str]
    #: The provider's part of this channel's Redis keys (``<prefix>:<provider>:sent:…``); ``name`` when empty.
    provider: ClassVar[str] = ""

    def __init__(self, ctx: EdgeContext) -> None:
        self.ctx = ctx

    @property
    def callback_url(self) -> str:
        """Where the core sends this channel's replies (workers reach the edge at INTERNAL_BASE_URL)."""
        return f"{self.ctx.settings.internal_base_url.rstrip('/')}/v1/channels/{self.name}/callback"

    def accept(self, envelope: Envelope, delivery_id: str | None) -> Accepted:
        """Queue durably, attachments through the convert step first; a provider's repeated delivery
        (same id) returns the first message.  Views call this only after the provider's signature
        verified, so the sender's rate limit (429, nothing admitted) counts real senders only."""
        if self.ctx.limits is not None:
            self.ctx.limits.sender(self.name, envelope.sender)
        return accept(self.ctx, envelope, delivery_id)

    @abstractmethod
    def blueprint(self) -> Blueprint:
        """The provider's webhooks."""

    @abstractmethod
    def send(self, reply: CallbackReply) -> None:
        """Hand the reply to the provider; raise TemporarySendError or PermanentSendError."""

    def send_partial(self, update: PartialUpdate) -> str:
        """Show a reply still being written; best effort, never raises; what happened (for the log)."""
        return "ignored: this channel shows finished replies only"

    # --- a reply in parts -----------------------------------------------------------
    def send_parts(
        self, message_id: str, parts: Sequence[str], post: Callable[[str, int], str], *,
        shown: str | None = None, edit: Callable[[str, str], bool] | None = None,
    ) -> None:
        """Send a reply part by part, each part at most once (a retry resumes where it failed).

        ``post(text, index)`` sends a new provider message and returns its id.  With ``shown`` (the provider
        message showing the reply's partial text: ``take_over_partial``) the first part ``edit(shown, text)``s
        that message instead; ``edit`` returning False (the message is gone) posts the part anew."""
        for index, text in enumerate(parts):
            sent_key = self.ctx.keys.reply_part_sent(self.provider or self.name, message_id, index)
            if self.ctx.redis.exists(sent_key):
                continue  # sent by an earlier attempt that failed on a later part
            if index == 0 and shown and edit is not None and edit(shown, text):
                provider_id = shown
            else:
                provider_id = post(text, index)
            self.ctx.redis.set(sent_key, provider_id, ex=self.ctx.settings.idempotency_ttl_seconds)

    @staticmethod
    def take_over_partial(shown: ShownReplies, message_id: str, *, enabled: bool, wait_seconds: float) -> str | None:
        """The provider message showing this reply's partial text (no partial can follow now), if any.

        None when streaming is off; TemporarySendError while a partial update holds the message longer
        than ``wait_seconds`` (the core retries the reply)."""
        if not enabled:
            return None
        try:
            return shown.finalize(message_id, wait_seconds)
        except PartialBusy as exc:
            raise TemporarySendError(str(exc)) from None
