"""Helper registration: ``POST /v1/helpers``, heartbeat, leave, list.

Registration needs ``Authorization: Bearer <token>``: the helper's own token
when ``HELPER_TOKENS`` names it, else the shared ``HELPER_REGISTRATION_TOKEN``.
A name a live helper holds is renewed or changed only with that helper's
current secret (``X-Helper-Secret``) or its own token; anyone else gets 409
with Retry-After (when the name expires).  Heartbeat and leave need the
per-helper secret issued at registration, so one helper cannot keep alive,
take over or remove another.
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
from redis_stores.helper_registry import NameTaken, validate_manifest
from tasks.signing import new_secret

__all__ = ["blueprint"]

blueprint = Blueprint("helpers", __name__)


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _registration_owner(name: object) -> bool:
    """Check the registration token for the helper ``name``: True when it is that helper's own token."""
    settings = edge().settings
    own = settings.helper_token_map.get(name) if isinstance(name, str) else None
    if own is not None:
        if not _same(_bearer(), own):
            raise Unauthorized(f"{name!r} registers with its own token from HELPER_TOKENS (Authorization: Bearer)")
        return True
    if not settings.helper_registration_token:
        raise Unauthorized("helper registration is closed for this name: neither HELPER_TOKENS nor "
                           "HELPER_REGISTRATION_TOKEN allows it")
    if not _same(_bearer(), settings.helper_registration_token):
        raise Unauthorized("missing or wrong registration token (Authorization: Bearer <token>)")
    return False


@blueprint.post("/v1/helpers")
def register() -> ResponseReturnValue:
    ctx = edge()
    if not _bearer():  # before reading the body: a stranger learns nothing about it
        if not (ctx.settings.helper_registration_token or ctx.settings.helper_tokens):
            raise Unauthorized("helper registration is closed: neither HELPER_REGISTRATION_TOKEN nor HELPER_TOKENS "
                               "is set")
        raise Unauthorized("missing registration token (Authorization: Bearer <token>)")
    body = json_object()
    owner = _registration_owner(body.get("name"))
    try:
        manifest = validate_manifest(body, ctx.policy, wildcard_accepts=ctx.settings.helper_wildcard_accepts)
    except ValidationError as exc:
        raise BadRequest("invalid helper manifest", fields=exc.messages_dict) from exc
    secret = new_secret()
    try:
        ctx.helpers.register(manifest, secret, current_secret=request.headers.get("X-Helper-Secret", "").strip(),
                             owner=owner)
    except NameTaken as exc:
        raise Conflict(
            f"a live helper holds the name {exc.name!r}: renew or change it with that helper's current secret "
            f"(X-Helper-Secret), or register once it has expired (in {exc.retry_after} s)",
            retry_after=exc.retry_after,
        ) from exc
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
