"""Every error the edge returns, as JSON, in one place.

    ApiError                 (status, "error", optional "fields")
     ├── BadRequest          400  malformed JSON or invalid fields
     ├── Unauthorized        401
     ├── Forbidden           403  signature checks
     ├── NotFound            404
     ├── Conflict            409  may carry Retry-After (a helper name held until it expires)
     ├── UnsupportedMedia    415
     ├── Unprocessable       422
     ├── TooManyRequests     429  a rate limit (edge/ratelimit.py); carries Retry-After
     └── Unavailable         503  Redis or the broker cannot take the message

Werkzeug's own HTTP errors (413 from MAX_CONTENT_LENGTH, 404/405 routing),
a JSON body nested too deeply to parse (RecursionError: 400) and Redis/kombu
connection errors are mapped here too, so nothing reaches a client as an
HTML page or a bare 500; so is file storage that cannot be reached
(``BlobsUnavailable``: a 503, and a provider that posted the mail redelivers it).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import redis
from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from edge.file_blobs import BlobsUnavailable

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMedia",
    "register_error_handlers",
]

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    headers: ClassVar[dict[str, str]] = {}  # sent with the error (e.g. a 401's WWW-Authenticate)

    def __init__(self, error: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__(error)
        self.error, self.fields = error, fields

    def body(self) -> dict[str, Any]:
        return {"error": self.error, **({"fields": self.fields} if self.fields else {})}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409

    def __init__(self, error: str, fields: dict[str, Any] | None = None, retry_after: int | None = None) -> None:
        super().__init__(error, fields)
        self.retry_after = None if retry_after is None else max(1, retry_after)


class UnsupportedMedia(ApiError):
    status = 415


class Unprocessable(ApiError):
    status = 422


class TooManyRequests(ApiError):
    status = 429

    def __init__(self, error: str, retry_after: int) -> None:
        super().__init__(error)
        self.retry_after = max(1, retry_after)


class Unavailable(ApiError):
    status = 503


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> ResponseReturnValue:
        response = jsonify(exc.body())
        response.headers.update(exc.headers)
        if exc.status == 503:
            response.headers["Retry-After"] = "5"
        retry_after = getattr(exc, "retry_after", None)  # a 429, or a 409 that ends by itself (a name held)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response, exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        messages = {413: "request body is too large"}
        code = exc.code or 500
        return jsonify({"error": messages.get(code, exc.description or exc.name)}), code

    @app.errorhandler(RecursionError)
    def _too_deep(exc: RecursionError) -> ResponseReturnValue:
        # json.loads recurses once per nesting level: "[[[[…" within MAX_BODY_BYTES would otherwise be a 500
        log.warning("request rejected: %s", exc)
        return _api_error(BadRequest("the body is nested too deeply"))

    @app.errorhandler(redis.exceptions.ResponseError)  # OutOfMemoryError is one; a script's OOM is another
    def _redis_refused(exc: Exception) -> ResponseReturnValue:
        if "OOM" not in str(exc):
            return _bug(exc)
        log.warning("Redis is full: %s", exc)
        return _api_error(Unavailable("storage is full (Redis maxmemory); nothing was accepted, try again shortly"))

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    @app.errorhandler(OperationalError)
    def _unavailable(exc: Exception) -> ResponseReturnValue:
        log.warning("backend unavailable: %s", exc)
        return _api_error(Unavailable("the message queue is unavailable; try again shortly"))

    @app.errorhandler(BlobsUnavailable)
    def _no_file_storage(exc: BlobsUnavailable) -> ResponseReturnValue:
        log.warning("file storage unavailable: %s", exc)
        return _api_error(Unavailable("file storage is unavailable; nothing was accepted, try again shortly"))

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return jsonify({"error": "internal error"}), 500
