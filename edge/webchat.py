"""``GET /chat``: a small web chat page on top of the JSON API, no build step.

The page (``edge/static/chat/``: HTML, CSS and plain JavaScript) sends with
``POST /v1/messages`` (or ``POST /v1/files`` with a file) as a user id it makes
once and keeps in ``localStorage``, then long-polls
``GET /v1/messages/<id>?wait=25`` until the answer is there.  The conversation
is kept in ``localStorage`` too, so a reload shows it and resumes waiting for a
pending answer; the server needs no session of its own for the page.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, send_from_directory
from flask.typing import ResponseReturnValue

__all__ = ["blueprint"]

STATIC = Path(__file__).resolve().parent / "static" / "chat"

blueprint = Blueprint("webchat", __name__, static_folder=str(STATIC), static_url_path="/chat/static")

# Same-origin scripts, styles and requests only: the page needs nothing else.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


@blueprint.get("/chat")
def chat() -> ResponseReturnValue:
    response = send_from_directory(STATIC, "chat.html", mimetype="text/html", max_age=0)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response
