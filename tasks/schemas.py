"""Messages as plain data: the envelope and the reply, validated on the way in and out.

Frozen dataclasses travel as JSON dicts (``to_dict``/``from_dict``); the
marshmallow schemas are the single definition of what a valid one is, for the
edge (validating what a channel built) and the workers (validating what came
off the queue).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

__all__ = [
    "MAX_ATTACHMENT_NAME",
    "Attachment",
    "Envelope",
    "EnvelopeSchema",
    "Reply",
    "ReplyRoute",
    "ReplySchema",
    "ValidationError",
    "envelope_errors",
    "new_message_id",
    "utcnow_iso",
]


def new_message_id() -> str:
    return uuid.uuid4().hex


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Attachment:
    mime: str
    size: int
    name: str
    url: str  # where a converter can fetch it (a provider URL or our own store)


@dataclass(frozen=True)
class ReplyRoute:
    """Where and how an answer goes back: a callback URL plus the opaque context the channel needs."""

    callback_url: str | None
    context: dict[str, Any] = field(default_factory=dict)
    # > 0: the channel can show a reply while it is written, at most one partial every this many
    # seconds (STREAM_INTERVAL_SECONDS is the floor); 0: only the finished reply.
    stream_interval: float = 0.0
    # The client door's caller whose URL this is (a reply_url): its deliveries share one bulkhead
    # (DELIVERY_CONCURRENCY_PER_CLIENT). Empty for a channel's own callback.
    owner: str = ""


@dataclass(frozen=True)
class Envelope:
    message_id: str
    channel: str
    channel_message_id: str | None
    sender: str
    session_id: str
    text: str
    attachments: tuple[Attachment, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    reply: ReplyRoute = field(default_factory=lambda: ReplyRoute(callback_url=None))
    received_at: str = field(default_factory=utcnow_iso)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["attachments"] = [asdict(a) for a in self.attachments]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        envelope: Envelope = EnvelopeSchema().load(data)
        return envelope


@dataclass(frozen=True)
class Reply:
    message_id: str
    session_id: str
    text: str
    channel: str
    reply: ReplyRoute
    created_at: str = field(default_factory=utcnow_iso)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    status: str = "answered"  # or "failed": the text is then a polite notice, ``error`` the reason
    error: str | None = None
    context_message_ids: tuple[str, ...] = ()  # earlier messages whose turns were in the prompt
    generation_ms: float = 0.0  # time spent in the model, for operators and benchmarks

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["context_message_ids"] = list(self.context_message_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        reply: Reply = ReplySchema().load(data)
        return reply


MAX_ATTACHMENT_NAME = 255


class _Strict(Schema):
    class Meta:
        unknown = EXCLUDE


class AttachmentSchema(_Strict):
    mime = fields.String(required=True, validate=validate.Regexp(r"^[\w.+-]+/[\w.+-]+\Z"))
    size = fields.Integer(required=True, validate=validate.Range(min=0))
    name = fields.String(required=True, validate=validate.Length(max=MAX_ATTACHMENT_NAME))
    url = fields.String(required=True, validate=validate.Length(min=1, max=2048))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Attachment:
        return Attachment(**data)


class ReplyRouteSchema(_Strict):
    callback_url = fields.Url(required=True, allow_none=True, require_tld=False, schemes={"http", "https"})
    context = fields.Dict(keys=fields.String(), load_default=dict)
    stream_interval = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=3600))
    owner = fields.String(load_default="", validate=validate.Length(max=256))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> ReplyRoute:
        return ReplyRoute(**data)


_ID = validate.Length(min=1, max=256)


class EnvelopeSchema(_Strict):
    message_id = fields.String(required=True, validate=_ID)
    channel = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_.-]{0,31}\Z"))
    channel_message_id = fields.String(load_default=None, allow_none=True, validate=_ID)
    sender = fields.String(required=True, validate=_ID)
    session_id = fields.String(required=True, validate=_ID)
    text = fields.String(required=True)
    attachments = fields.List(fields.Nested(AttachmentSchema), load_default=list)
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    reply = fields.Nested(ReplyRouteSchema, required=True)
    received_at = fields.String(required=True)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Envelope:
        data["attachments"] = tuple(data["attachments"])
        return Envelope(**data)


def envelope_errors(envelope: Envelope) -> dict[str, Any]:
    """What the workers would refuse in ``envelope`` (empty when it loads): the edge checks this before any
    2xx, so a message it accepts can always be loaded by the worker that answers it."""
    errors: dict[str, Any] = EnvelopeSchema().validate(envelope.to_dict())
    return errors


class ReplySchema(_Strict):
    message_id = fields.String(required=True, validate=_ID)
    session_id = fields.String(required=True, validate=_ID)
    text = fields.String(required=True)
    channel = fields.String(required=True)
    reply = fields.Nested(ReplyRouteSchema, required=True)
    created_at = fields.String(required=True)
    prompt_tokens = fields.Integer(load_default=0)
    completion_tokens = fields.Integer(load_default=0)
    status = fields.String(load_default="answered", validate=validate.OneOf(["answered", "failed"]))
    error = fields.String(load_default=None, allow_none=True)
    context_message_ids = fields.List(fields.String(), load_default=list)
    generation_ms = fields.Float(load_default=0.0)

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Reply:
        data["context_message_ids"] = tuple(data["context_message_ids"])
        return Reply(**data)
