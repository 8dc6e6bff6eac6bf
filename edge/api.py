"""The generic API channel: ``POST /v1/messages`` and ``GET /v1/messages/<id>``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, pre_load, validate, validates

from edge.bodies import json_object
from edge.clients import Caller, caller
from edge.context import edge
from edge.errors import BadRequest, NotFound
from edge.intake import accept
from edge.ratelimit import client_ip
from outbound_http.host_policy import BlockedURL
from redis_stores.messages import settled
from tasks.keys import scoped
from tasks.schemas import Attachment, Envelope, ReplyRoute, new_message_id

__all__ = ["MessageRequest", "SenderRequest", "UploadRequest", "attachment_name", "blueprint", "session_id_for"]

blueprint = Blueprint("api", __name__)

CHANNEL = "api"
MAX_URL_CHARS = 2048  # what the workers' envelope schema takes (tasks/schemas.py)
MAX_SESSION_ID_CHARS = 256
_NAME = validate.Regexp(r"^[\w.@+:=-]{1,128}\Z", error="use 1-128 letters, digits or . @ + : = - _")


class AttachmentRequest(Schema):
    class Meta:
        unknown = RAISE

    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"},
                     validate=validate.Length(max=MAX_URL_CHARS))
    mime = fields.String(required=True, validate=validate.Regexp(r"^[\w.+-]+/[\w.+-]+\Z", error="not a MIME type"))
    name = fields.String(load_default="", validate=validate.Length(max=255))
    size = fields.Integer(load_default=0, validate=validate.Range(min=0))

    @validates("url")
    def _url_allowed(self, value: str, **_: Any) -> None:
        try:
            edge().policy.check(value)
        except BlockedURL as exc:
            raise ValidationError(str(exc)) from exc


class SenderRequest(Schema):
    """What ``POST /v1/messages`` and ``POST /v1/files`` both take: who sends, in which session, where the reply
    goes; the one definition of those fields (the JSON body and the upload's form differ only around them)."""

    user = fields.String(required=True, validate=_NAME)
    session = fields.String(load_default=None, allow_none=True, validate=_NAME)
    text = fields.String(load_default="")
    reply_url = fields.Url(load_default=None, allow_none=True, require_tld=False, schemes={"http", "https"},
                           validate=validate.Length(max=MAX_URL_CHARS))

    @validates("text")
    def _text_length(self, value: str, **_: Any) -> None:
        limit = edge().settings.max_text_chars
        if len(value) > limit:
            raise ValidationError(f"longer than MAX_TEXT_CHARS ({limit} characters)")

    @validates("reply_url")
    def _reply_url_allowed(self, value: str | None, **_: Any) -> None:
        if value:
            try:
                edge().policy.check(value)
            except BlockedURL as exc:
                raise ValidationError(str(exc)) from exc


class MessageRequest(SenderRequest):
    """``POST /v1/messages``' JSON body."""

    class Meta:
        unknown = RAISE

    text = fields.String(required=True, validate=validate.Length(min=1))
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    attachments = fields.List(fields.Nested(AttachmentRequest), load_default=list, validate=validate.Length(max=10))
    stream = fields.Boolean(load_default=False)  # show the reply while it is written (GET …?partial=<seq>)

    @validates("metadata")
    def _metadata_size(self, value: dict[str, Any], **_: Any) -> None:
        limit = edge().settings.max_metadata_bytes
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > limit:  # a 1 MB object became a 1.67 MB record kept for STATUS_TTL_SECONDS
            raise ValidationError(f"{size} bytes as JSON, more than MAX_METADATA_BYTES ({limit})")


class UploadRequest(SenderRequest):
    """``POST /v1/files``' form fields besides the file: strings, an empty one as if it were not sent."""

    class Meta:
        unknown = EXCLUDE  # the file itself, and anything a browser form adds

    stream = fields.String(load_default="false",
                           validate=validate.OneOf(["true", "false", "1", "0"], error="use true or false"))

    @pre_load
    def _from_form(self, form: Mapping[str, str], **_: Any) -> dict[str, Any]:
        return {"user": form.get("user", ""), "session": form.get("session") or None,
                "text": (form.get("text") or "").strip(), "reply_url": form.get("reply_url") or None,
                "stream": (form.get("stream") or "false").strip().lower()}


def session_id_for(caller: Caller, user: str, session: str | None) -> str:
    """``caller.session_id``, or 400 when it would be longer than the workers take."""
    session_id = caller.session_id(user, session)
    if len(session_id) > MAX_SESSION_ID_CHARS:
        room = MAX_SESSION_ID_CHARS - len(caller.session_id("", "x")) + 1
        raise BadRequest("invalid fields",
                         fields={"session": [f"user and session together must be at most {room} characters"]})
    return session_id


def attachment_name(url: str) -> str:
    """A name for an attachment sent without one: the URL path's last segment, decoded, cut to 255 characters."""
    segment = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    return re.sub(r"[\x00-\x1f\x7f]", "", segment)[:255] or "attachment"


@blueprint.post("/v1/messages")
def post_message() -> ResponseReturnValue:
    ctx = edge()
    who = caller()  # before the body is read
    try:
        data = MessageRequest().load(json_object())
    except ValidationError as exc:
        raise BadRequest("invalid fields", fields=exc.messages_dict) from exc
    who.speaks_for(data["user"])
    session_id = session_id_for(who, data["user"], data["session"])
    if ctx.limits is not None:
        ctx.limits.check("user", ctx.settings.rate_limit_user, scoped(who.owner, data["user"]),
                         "messages from this user")
    idempotency_key = request.headers.get("Idempotency-Key") or None
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise BadRequest("Idempotency-Key must be 1-255 characters", fields={"Idempotency-Key": ["bad length"]})
    envelope = Envelope(
        message_id=new_message_id(),
        channel=CHANNEL,
        channel_message_id=idempotency_key,
        sender=data["user"],
        session_id=session_id,
        text=data["text"],
        attachments=tuple(
            Attachment(a["mime"], a["size"], a["name"] or attachment_name(a["url"]), a["url"])
            for a in data["attachments"]
        ),
        metadata=data["metadata"],
        reply=ReplyRoute(callback_url=data["reply_url"],
                         stream_interval=ctx.settings.stream_interval_seconds if data["stream"] else 0.0,
                         owner=who.owner if data["reply_url"] else ""),
    )
    scoped_key = scoped(who.owner, data["user"], idempotency_key) if idempotency_key else None
    accepted = accept(ctx, envelope, scoped_key, owner=who.owner)
    base = ctx.settings.public_base_url.rstrip("/")
    response = jsonify(
        {
            "message_id": accepted.message_id,
            "session_id": accepted.session_id,
            "status_url": f"{base}/v1/messages/{accepted.message_id}",
        }
    )
    if accepted.duplicate:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/messages/{accepted.message_id}"
    return response, 202


@blueprint.get("/v1/messages/<message_id>")
def get_message(message_id: str) -> ResponseReturnValue:
    ctx = edge()
    who = caller()
    raw_wait = request.args.get("wait", "0")
    try:
        wait = float(raw_wait)
    except ValueError as exc:
        raise BadRequest("wait must be a number of seconds", fields={"wait": [f"not a number: {raw_wait!r}"]}) from exc
    if not 0 <= wait <= ctx.settings.max_wait_seconds:
        raise BadRequest(
            f"wait must be between 0 and {ctx.settings.max_wait_seconds:g} seconds (MAX_WAIT_SECONDS)",
            fields={"wait": ["out of range"]},
        )
    raw_partial = request.args.get("partial")
    after_partial: int | None = None
    if raw_partial is not None:
        if not re.fullmatch(r"[0-9]{1,9}", raw_partial):  # ASCII only: "²".isdigit() is true
            raise BadRequest("partial must be the last partial's seq (0 before the first)",
                             fields={"partial": [f"not a sequence number: {raw_partial[:20]!r}"]})
        after_partial = int(raw_partial)
    if len(message_id) > 64:
        raise NotFound(f"no message {message_id[:64]!r}")
    record = ctx.messages.get(message_id)
    if record is not None and record.owner != who.owner:
        record = None  # someone else's: the same 404 as an id that does not exist
    if wait > 0 and not settled(record, after_partial):
        # Only a poll that really waits takes one of the threads lent to waiting (edge/waits.py).
        slots = ctx.waits
        with slots.hold(client_ip()) if slots is not None else nullcontext():
            record = ctx.messages.wait(message_id, wait, after_partial)
    if record is None:
        raise NotFound(f"no message {message_id!r}")
    return jsonify(record.public()), 200
