"""Uploads: ``POST /v1/files`` (a file sent as a message) and ``GET /v1/files/<id>`` (for converters).

The bytes are kept for ``FILES_TTL_SECONDS`` under an unguessable id (on disk in
``FILES_DIR``, their record in Redis: edge/file_store.py),
and a message is queued in the uploader's session (``api:<label>:<user>``, or a
web chat browser's ``webchat:<browser>``) whose Envelope carries the file as an
attachment. Its URL is signed (``?expires=…&sig=…``): the converters and
helpers that fetch it hold no client key; without the signature only the
uploader's key reads it.  A
type with a converter (docs/media.md) goes through the convert step first
(queue ``convert``) unless a live helper accepts it; any other type gets a
note telling the model the file could not be read, so the person gets a polite
answer instead of silence.
"""

from __future__ import annotations

import fnmatch
import mimetypes
import re
import time
import uuid
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from edge.api import UploadRequest, session_id_for
from edge.clients import caller
from edge.context import edge
from edge.errors import ApiError, BadRequest, Forbidden, NotFound, TooManyRequests, UnsupportedMedia
from edge.file_store import FileStore, QuotaExceeded
from edge.intake import accept
from edge.media.registry import converter_for
from edge.media.step import max_bytes_for
from edge.observability import note_refused
from edge.tokens import Signer
from tasks.keys import scoped
from tasks.schemas import Attachment, Envelope, ReplyRoute, new_message_id
from tasks.settings import Settings

__all__ = ["blueprint"]

blueprint = Blueprint("files", __name__)

CHANNEL = "api"
_MIME = re.compile(r"^[\w.+-]+/[\w.+-]+\Z")
_FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields around the file


KIND = "uploads"


class TooLarge(ApiError):
    status = 413


def _store() -> FileStore:
    store = edge().files
    if store is None:
        raise RuntimeError("this app stores no files")
    return store


def signed_path(settings: Settings, file_id: str) -> str:
    """``/v1/files/<id>?expires=…&sig=…``: readable without a key for as long as the file is kept."""
    expires = int(time.time()) + settings.files_ttl_seconds
    signature = _url_signer(settings.switchboard_secret).sign_until(expires, file_id)
    return f"/v1/files/{file_id}?expires={expires}&sig={signature}"


@lru_cache(maxsize=8)
def _url_signer(secret: str) -> Signer:
    return Signer(secret, "file-url")


def _allowed(mime: str, patterns: str) -> bool:
    return any(fnmatch.fnmatch(mime, p.strip().lower()) for p in patterns.split(",") if p.strip())


@blueprint.post("/v1/files")
def upload() -> ResponseReturnValue:
    ctx = edge()
    who = caller()  # before the body is read
    settings = ctx.settings
    request.max_content_length = settings.files_max_bytes + _FORM_OVERHEAD
    try:
        upload = request.files.get("file")
        form = request.form
    except RequestEntityTooLarge as exc:
        raise TooLarge(f"the file is larger than FILES_MAX_BYTES ({settings.files_max_bytes} bytes)") from exc
    if not request.mimetype.startswith("multipart/form-data"):
        raise UnsupportedMedia("send multipart/form-data with a 'file' field")
    try:
        fields = UploadRequest().load(form)
        problems: dict[str, Any] = {}
    except ValidationError as exc:
        fields, problems = {}, dict(exc.messages_dict)
    if upload is None or not upload.filename:
        problems["file"] = ["required"]
    if problems or upload is None:
        raise BadRequest("invalid fields", fields=problems)
    user, session, text, reply_url = fields["user"], fields["session"], fields["text"], fields["reply_url"]
    stream = fields["stream"]
    who.speaks_for(user)
    session_id = session_id_for(who, user, session)
    if ctx.limits is not None:
        ctx.limits.check("uploads", settings.rate_limit_uploads, scoped(who.owner, user), "uploads from this user")
    data = upload.read()
    if len(data) > settings.files_max_bytes:
        raise TooLarge(f"the file is larger than FILES_MAX_BYTES ({settings.files_max_bytes} bytes)")
    if not data:
        raise BadRequest("invalid fields", fields={"file": ["empty"]})
    name = (upload.filename or "file").replace("\\", "/").rsplit("/", 1)[-1][:255] or "file"
    mime = (upload.mimetype or "").lower()
    if not _MIME.match(mime) or mime == "application/octet-stream":
        mime = (mimetypes.guess_type(name)[0] or "application/octet-stream").lower()
    if not _allowed(mime, settings.files_allowed_types):
        raise UnsupportedMedia(f"files of type {mime} are not accepted (FILES_ALLOWED_TYPES)")
    if converter_for(mime) is not None and len(data) > max_bytes_for(settings, mime):
        raise TooLarge(f"the file is larger than the limit for {mime} ({max_bytes_for(settings, mime)} bytes)")

    if ctx.fill is not None:
        ctx.fill.check()  # before the bytes are stored, not only before the message is
    file_id = uuid.uuid4().hex
    try:
        _store().put(KIND, file_id, data, mime=mime, name=name, ttl=settings.files_ttl_seconds, owner=who.owner,
                     quota=settings.quota_stored_bytes)
    except QuotaExceeded as exc:
        note_refused("quota_stored_bytes")
        raise TooManyRequests(f"your stored files hold {exc.stored} bytes; this one would pass QUOTA_STORED_BYTES "
                              f"({settings.quota_stored_bytes}) until older files expire", exc.retry_after) from exc
    base = settings.public_base_url.rstrip("/")
    attachment = Attachment(mime=mime, size=len(data), name=name, url=base + signed_path(settings, file_id))
    envelope = Envelope(
        message_id=new_message_id(),
        channel=CHANNEL,
        channel_message_id=None,
        sender=user,
        session_id=session_id,
        text=text.strip(),
        attachments=(attachment,),
        metadata={"upload": {"file_id": file_id, "name": name, "mime": mime, "size": len(data)},
                  **({"caption": text} if text else {})},
        reply=ReplyRoute(callback_url=reply_url,
                         stream_interval=settings.stream_interval_seconds if stream in ("true", "1") else 0.0),
    )
    try:
        accepted = accept(ctx, envelope, owner=who.owner)  # converted to text first, unless a helper takes the file
    except ApiError:
        _store().discard(KIND, file_id, who.owner)  # no message will read it: its bytes go back to the quota
        raise
    response = jsonify({"message_id": accepted.message_id, "session_id": accepted.session_id,
                        "status_url": f"{base}/v1/messages/{accepted.message_id}",
                        "file": {"id": file_id, "url": attachment.url, "name": name, "mime": mime,
                                 "size": len(data)}})
    response.headers["Location"] = f"/v1/messages/{accepted.message_id}"
    return response, 202


@blueprint.get("/v1/files/<file_id>")
def download(file_id: str) -> ResponseReturnValue:
    """The uploader's key, or the signed URL the message's attachment carries (converters, helpers)."""
    signed = "sig" in request.args
    if signed:
        valid = _url_signer(edge().settings.switchboard_secret).valid_until(
            request.args.get("sig", ""), request.args.get("expires", ""), file_id)
        if not valid:
            raise Forbidden("this file URL's signature is not valid, or it has expired")
        owner = None
    else:
        owner = caller().owner
    stored = _store().get(KIND, file_id) if re.fullmatch(r"[0-9a-f]{32}", file_id) else None
    if stored is None or (owner is not None and stored.owner != owner):
        raise NotFound(f"no file {file_id[:64]!r} (unknown or expired)")
    response = Response(stored.data, mimetype=stored.mime)
    response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(stored.name, safe='')}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
