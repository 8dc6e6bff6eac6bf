"""``GET /status``: the operator's page — workers, queues, helpers, dead letters, key numbers.

Plain HTML, CSS and JavaScript (``edge/static/status/``), no build step; the
script reads ``GET /v1/status`` every ``STATUS_PAGE_REFRESH`` seconds and
renders with ``textContent`` only (no HTML from data), under a strict CSP.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response
from flask.typing import ResponseReturnValue

from edge.context import edge
from edge.operator import operator_route

__all__ = ["blueprint"]

STATIC = Path(__file__).resolve().parent / "static" / "status"

blueprint = Blueprint("status_page", __name__, static_folder=str(STATIC), static_url_path="/status/static")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


@blueprint.get("/status")
@operator_route
def status_page() -> ResponseReturnValue:
    page = (STATIC / "status.html").read_text(encoding="utf-8")
    page = page.replace("__REFRESH_SECONDS__", f"{edge().settings.status_page_refresh:g}")
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response
