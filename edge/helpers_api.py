"""Helper registration: ``POST /v1/helpers``, heartbeat, leave, list.

Registration needs ``Authorization: Bearer <HELPER_REGISTRATION_TOKEN>``;
heartbeat and leave need the per-helper secret issued at registration, so
one helper cannot keep alive or remove another.
"""

from __future__ import annotations

import hmac
import time

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from edge.bodies import json_object
from edge.context import edge
from edge.errors import BadRequest, Conflict, NotFound, Unauthorized
from tasks.helpers import NameTaken, validate_manifest
from tasks.signing import new_secret

__all__ = ["blueprint"]

blueprint = Blueprint("helpers", __name__)


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


@blueprint.post("/v1/helpers")
def register() -> ResponseReturnValue:
    ctx = edge()
    token = ctx.settings.helper_registration_token
    if not token:
        raise Unauthorized("helper registration is closed: HELPER_REGISTRATION_TOKEN is not set")
    if not _same(_bearer(), token):
        raise Unauthorized("missing or wrong registration token (Authorization: Bearer <token>)")
    try:
        manifest = validate_manifest(json_object(), ctx.policy)
    except ValidationError as exc:
        raise BadRequest("invalid helper manifest", fields=exc.messages_dict) from exc
    secret = new_secret()
    try:
        ctx.helpers.register(manifest, secret)
    except NameTaken as exc:
        raise Conflict(f"a live helper named {manifest['name']!r} is registered from another URL") from exc
    return jsonify(
        {
            "name": manifest["name"],
            "secret": secret,
            "heartbeat_interval": ctx.helpers.heartbeat_interval,
            "expires_in": ctx.helpers.expires_in,
        }
    ), 201


def _authorized_helper(name: str) -> None:
    secret = edge().helpers.secret(name)
    if secret is None:
        raise NotFound(f"no helper {name!r} (expired or never registered): register again")
    if not _same(_bearer(), secret):
        raise Unauthorized("missing or wrong helper secret (Authorization: Bearer <secret>)")


@blueprint.put("/v1/helpers/<name>/heartbeat")
def heartbeat(name: str) -> ResponseReturnValue:
    _authorized_helper(name)
    helpers = edge().helpers
    if not helpers.heartbeat(name):
        raise NotFound(f"no helper {name!r} (expired): register again")
    return jsonify({"heartbeat_interval": helpers.heartbeat_interval, "expires_in": helpers.expires_in}), 200


@blueprint.delete("/v1/helpers/<name>")
def deregister(name: str) -> ResponseReturnValue:
    _authorized_helper(name)
    edge().helpers.deregister(name)
    return "", 204


@blueprint.get("/v1/helpers")
def list_helpers() -> ResponseReturnValue:
    now = time.time()
    return jsonify({"helpers": [record.public(now) for record in edge().helpers.all()]}), 200
