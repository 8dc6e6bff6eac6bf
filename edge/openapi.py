"""``GET /openapi.json``: the edge's OpenAPI document, as JSON.

The canonical file is ``docs/openapi.yaml``; ``edge/openapi.yaml`` is a
symbolic link to it, so a wheel (package data, the link followed) carries
the same document an installed edge serves.  Read and converted once per
process.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

__all__ = ["blueprint", "document"]

blueprint = Blueprint("openapi", __name__)


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    text = resources.files("edge").joinpath("openapi.yaml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


@blueprint.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    response = jsonify(document())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response, 200
