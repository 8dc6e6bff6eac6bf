"""Liveness, readiness and an operator's status view."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from edge.context import edge
from edge.errors import Unavailable
from tasks.names import QUEUE_CONVERT, QUEUE_CORE, QUEUE_DELIVER

__all__ = ["blueprint"]

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process answers: nothing else is checked (a restart would not help)."""
    return jsonify({"status": "ok"}), 200


@blueprint.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready only while Redis answers: a load balancer should not send messages we cannot queue."""
    try:
        edge().redis.ping()
    except Exception as exc:
        raise Unavailable(f"redis unreachable: {type(exc).__name__}") from exc
    return jsonify({"status": "ready"}), 200


@blueprint.get("/v1/status")
def status() -> ResponseReturnValue:
    ctx = edge()
    pipe = ctx.redis.pipeline(transaction=False)
    for queue in (QUEUE_CORE, QUEUE_DELIVER, QUEUE_CONVERT):
        pipe.llen(queue)
    depths = pipe.execute()
    try:
        replies = ctx.celery.control.ping(timeout=0.5) or []
        workers = sorted(name for reply in replies for name in reply)
    except Exception:
        workers = []
    return jsonify(
        {
            "queues": dict(zip((QUEUE_CORE, QUEUE_DELIVER, QUEUE_CONVERT), depths, strict=True)),
            "workers": workers,
            "dead_letters": ctx.dead_letters.count(),
            "recent_dead_letters": ctx.dead_letters.recent(10),
        }
    ), 200
