"""Reading request bodies the same way in every JSON route."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from edge.errors import BadRequest, UnsupportedMedia

__all__ = ["json_object"]


def json_object() -> dict[str, Any]:
    """The body as a JSON object: 415 when it is not JSON, 413 when too large (chunked too), 400 when it does
    not parse or is not an object."""
    if not request.is_json:
        raise UnsupportedMedia("send a JSON body with Content-Type: application/json")
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(request.get_data(cache=True)) >= limit:
        raise RequestEntityTooLarge()  # chunked: Werkzeug stops reading at the limit instead of refusing
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    try:  # "\ud800" parses, but no UTF-8 can hold it: Redis, the model and callbacks would fail later
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest("the body holds text that is not valid Unicode (a lone surrogate escape)") from exc
    return body
