"""Per-sender rate limits: Flask-Limiter on the system's Redis, answered with 429 JSON and ``Retry-After``.

Buckets (each a setting; an empty value turns that bucket off):

    RATE_LIMIT_IP       per client IP    the JSON API, uploads, helper routes   Flask-Limiter's before_request
    RATE_LIMIT_USER     per API user     POST /v1/messages (the web chat too)   in the view, once ``user`` is known
    RATE_LIMIT_UPLOADS  per API user     POST /v1/files                         in the view, once the form is read
    RATE_LIMIT_BROWSERS per client IP    POST /v1/chat/token (new browsers)     in the view; a renewal is free
    RATE_LIMIT_SENDER   per provider     every provider channel's ``accept``    after the signature check, before
                        sender                                                  anything is admitted

A bucket costs one Redis round trip (``RATE_LIMIT_STRATEGY=fixed-window``: one
Lua INCR+EXPIRE); the Retry-After look-up is a second one, on a 429 only.
Nothing turned away was admitted: every check runs before ``accept``.

When Redis cannot be reached the limiter fails *open* (``RATE_LIMIT_FAIL_OPEN``,
default on): a request it cannot count goes on to intake, which answers 503
anyway while Redis is down, so failing closed would only add a second
failure mode.  With the setting off a storage error is answered 503.
"""

from __future__ import annotations

import logging
import math
import time
from functools import lru_cache

import redis
from flask import Blueprint, Flask, Response, jsonify, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import RateLimitItem, parse
from limits.errors import StorageError

from edge.errors import TooManyRequests, Unavailable
from tasks.keys import Keys, scoped
from tasks.settings import Settings, SettingsError

__all__ = ["RateLimits", "TooManyRequests", "client_ip"]

log = logging.getLogger(__name__)

STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")


def client_ip() -> str:
    """The connecting address (behind a proxy: the proxy's, see docs/security.md)."""
    return request.remote_addr or "unknown"


# Routes our own converters fetch from (a worker host's address must not run out of budget).
INTERNAL_ENDPOINTS = frozenset({"files.download"})


def _internal_fetch() -> bool:
    return request.endpoint in INTERNAL_ENDPOINTS


@lru_cache(maxsize=64)
def _parsed(limit: str) -> RateLimitItem:
    return parse(limit)


def _validate(settings: Settings) -> None:
    if settings.rate_limit_strategy not in STRATEGIES:
        raise SettingsError(f"RATE_LIMIT_STRATEGY must be one of {', '.join(STRATEGIES)}")
    for env, value in (("RATE_LIMIT_IP", settings.rate_limit_ip), ("RATE_LIMIT_USER", settings.rate_limit_user),
                       ("RATE_LIMIT_UPLOADS", settings.rate_limit_uploads),
                       ("RATE_LIMIT_BROWSERS", settings.rate_limit_browsers),
                       ("RATE_LIMIT_SENDER", settings.rate_limit_sender)):
        if value:
            try:
                _parsed(value)
            except ValueError as exc:
                raise SettingsError(f"{env}={value!r} is not a rate limit like '60/minute'") from exc


class RateLimits:
    """The app's limiter: IP buckets on whole blueprints, sender buckets checked explicitly."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        _validate(settings)
        self.settings = settings
        self.key_prefix = Keys(settings.key_prefix).ratelimit
        # The edge's own connection pool: its timeouts and health checks, no second pool per process.
        self.limiter = Limiter(
            client_ip,
            storage_uri="redis://",
            storage_options={"connection_pool": client.connection_pool},  # type: ignore[dict-item]
            strategy=settings.rate_limit_strategy,
            key_prefix=self.key_prefix,
            headers_enabled=False,  # X-RateLimit-* would cost a second round trip on every request
            swallow_errors=settings.rate_limit_fail_open,
        )

    def init_app(self, app: Flask, *ip_limited: Blueprint) -> None:
        self.limiter.init_app(app)
        if self.settings.rate_limit_ip:
            for blueprint in ip_limited:
                self.limiter.shared_limit(  # one bucket per address across all these blueprints
                    self.settings.rate_limit_ip, scope="ip", key_func=client_ip, exempt_when=_internal_fetch,
                    error_message=f"too many requests from this address ({self.settings.rate_limit_ip})",
                )(blueprint)
        app.register_error_handler(RateLimitExceeded, self._exceeded)

    def _exceeded(self, exc: RateLimitExceeded) -> Response:
        limit = self.limiter.current_limit
        retry_after = 60
        if limit is not None:
            try:
                retry_after = math.ceil(limit.reset_at - time.time())
            except Exception:  # the window could not be read: a safe default
                log.warning("could not read the rate limit window", exc_info=True)
        response = jsonify({"error": str(exc.description)})
        response.status_code = 429
        response.headers["Retry-After"] = str(max(1, retry_after))
        return response

    def check(self, bucket: str, limit: str, key: str, what: str) -> None:
        """Count one request of ``key`` in ``bucket``; TooManyRequests past ``limit`` (empty: no limit)."""
        if not limit:
            return
        item = _parsed(limit)
        identifiers = (self.key_prefix, bucket, scoped(key))  # laid out like the decorators' keys
        strategy = self.limiter.limiter
        try:
            if strategy.hit(item, *identifiers):
                return
            reset_at = strategy.get_window_stats(item, *identifiers).reset_time
        except (redis.RedisError, StorageError, OSError) as exc:
            if self.settings.rate_limit_fail_open:
                log.warning("rate limit %s not counted (storage unreachable): %s", bucket, exc)
                return
            raise Unavailable("the rate limiter's storage is unavailable; try again shortly") from exc
        log.info("rate limit %s exceeded by %s (%s)", bucket, key, limit)
        raise TooManyRequests(f"too many {what} ({limit}); try again later", math.ceil(reset_at - time.time()))

    def sender(self, channel: str, sender: str) -> None:
        """A provider channel's sender, after its signature was verified."""
        self.check(f"sender:{channel}", self.settings.rate_limit_sender, sender, "messages from this sender")
