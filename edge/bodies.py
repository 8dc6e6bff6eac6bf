"""Reading request bodies the same way in every JSON route."""

from __future__ import annotations

from typing import Any

from flask import request

from edge.errors import BadRequest, UnsupportedMedia

__all__ = ["json_object"]


def json_object() -> dict[str, Any]:
    """The body as a JSON object: 415 when it is not JSON, 400 when it does not parse or is not an object."""
    if not request.is_json:
        raise UnsupportedMedia("send a JSON body with Content-Type: application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body
