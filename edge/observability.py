"""The edge's side of observability: request counts, the accepted-message log line, log context.

``install(app, settings)`` sets up logging (``LOG_FORMAT``), points the
metrics at Redis and counts every answered request by channel and status
(``switchboard_http_requests_total``).  ``note_accepted(envelope)`` is the
one hook ``edge.intake.accept`` calls once a message is durably queued: it
binds the message's ids to the rest of the request's log lines, logs
"accepted" and counts it.
"""

from __future__ import annotations

import atexit
import logging
import time

import redis
from flask import Flask, Response, g, request

from tasks.keys import Keys
from tasks.schemas import Envelope
from tasks.settings import Settings
from telemetry import metrics
from telemetry.logs import bind_message, configure_logging, current_role, unbind_message

__all__ = ["channel_of", "install", "install_logging", "note_accepted"]

log = logging.getLogger("switchboard.edge")
access = logging.getLogger("switchboard.edge.access")

_exit_flush = {"registered": False}
_OPS = frozenset({"/healthz", "/readyz", "/v1/status", "/metrics", "/status"})


def channel_of(rule: str | None) -> str:
    """The channel a route belongs to (its rule, not its path: bounded label values)."""
    if rule is None:
        return "unmatched"
    if rule.startswith("/v1/channels/"):
        return rule.split("/")[3] or "channels"
    if rule.startswith(("/v1/messages", "/v1/files")):
        return "api"
    if rule.startswith("/chat"):
        return "webchat"
    if rule.startswith("/v1/helpers"):
        return "helpers"
    if rule in _OPS or rule.startswith("/status"):
        return "operations"
    return "other"


def note_refused(reason: str) -> None:
    """An admission turned away before anything was written (a full Redis, a caller's quota)."""
    metrics.inc("switchboard_admissions_refused_total", reason=reason)


def note_accepted(envelope: Envelope, *, converting: bool = False) -> None:
    bind_message(envelope.message_id, envelope.session_id)
    log.info("accepted", extra={"channel": envelope.channel, "converting": converting})
    metrics.inc("switchboard_messages_accepted_total", channel=envelope.channel)


def install_logging(settings: Settings) -> None:
    configure_logging(current_role() or "edge", settings.log_format, settings.log_level)


def install(app: Flask, settings: Settings, client: redis.Redis) -> None:
    """Count requests; flush this process's metrics through the app's own Redis client."""
    metrics.configure(lambda: client, Keys(settings.key_prefix), settings.metrics_flush_interval)
    if not _exit_flush["registered"]:  # a gunicorn worker that exits normally sends its last counts
        atexit.register(metrics.flush_now)
        _exit_flush["registered"] = True

    access_log = settings.log_format == "json"  # gunicorn's text access log is off then (gunicorn_conf.py)

    @app.before_request
    def _start() -> None:
        g.switchboard_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else None
        channel = channel_of(rule)
        metrics.inc("switchboard_http_requests_total", channel=channel, status=str(response.status_code))
        if access_log:
            started = g.get("switchboard_started")
            access.info("%s %s %s", request.method, request.path, response.status_code, extra={
                "method": request.method, "path": request.path, "status": response.status_code, "channel": channel,
                "remote": request.remote_addr,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1) if started else None,
            })
        return response

    @app.teardown_request
    def _unbind(_: BaseException | None) -> None:
        unbind_message()
