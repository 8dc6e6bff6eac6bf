"""Liveness, readiness and an operator's status view."""

from __future__ import annotations

from collections.abc import Iterator

import redis
from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from edge.context import edge
from edge.errors import Unavailable
from edge.operator import operator_route
from edge.status import Snapshot, gauges, snapshot, status_body
from telemetry.metrics_render import metric_families

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
@operator_route
def status() -> ResponseReturnValue:
    """Workers (heartbeats), queue depths, helpers and their circuits, dead letters, key numbers."""
    ctx = edge()
    ping = request.args.get("ping", "") in ("1", "true", "yes")
    try:
        snap = snapshot(ctx)
    except redis.RedisError as exc:
        raise Unavailable(f"redis unreachable: {type(exc).__name__}") from exc
    return jsonify(status_body(ctx, snap, ping=ping)), 200


@blueprint.get("/metrics")
@operator_route
def metrics() -> ResponseReturnValue:
    """Prometheus text format: the sums every process flushed to Redis, plus the live gauges."""
    ctx = edge()
    try:
        snap = snapshot(ctx)
    except redis.RedisError as exc:
        raise Unavailable(f"redis unreachable: {type(exc).__name__}") from exc
    body = generate_latest(_Snapshot(snap))
    return Response(body, status=200, mimetype=None, content_type=CONTENT_TYPE_LATEST)


class _Snapshot(Collector):
    """A one-off registry content: the families of one snapshot."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        return metric_families(self.snap.counters, self.snap.histograms, gauges(self.snap))
