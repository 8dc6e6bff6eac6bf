"""``GET /chat``: a small web chat page on top of the JSON API, no build step.

The page (``edge/static/chat/``: HTML, CSS and plain JavaScript) first gets a
browser token from ``POST /v1/chat/token`` (edge/clients.py): the edge signs a
new browser id, or renews the one a still-valid token names. It then sends
with ``POST /v1/messages`` (or ``POST /v1/files`` with a file) as that token's
user and long-polls ``GET /v1/messages/<id>?wait=25`` until the answer is
there, every request carrying the token. Token and conversation are kept in
``localStorage``, so a reload shows the conversation and resumes waiting for a
pending answer; the server keeps nothing per browser but the token's
signature key.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, jsonify, send_from_directory
from flask.typing import ResponseReturnValue

from edge.clients import browser_token, renewable_browser
from edge.context import edge
from edge.errors import Unavailable
from edge.ratelimit import client_ip

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


@blueprint.post("/v1/chat/token")
def token() -> ResponseReturnValue:
    """A browser token: the same browser again when a valid one is presented, else a new browser."""
    ctx = edge()
    if not ctx.settings.switchboard_secret:
        raise Unavailable("the web chat needs SWITCHBOARD_SECRET to sign its browser tokens")
    browser = renewable_browser()
    if browser is None and ctx.limits is not None:  # a new identity costs the address; a renewal does not
        ctx.limits.check("browsers", ctx.settings.rate_limit_browsers, client_ip(), "new browsers from this address")
    signed, browser = browser_token(ctx.settings, browser)
    response = jsonify({"token": signed, "user": f"web-{browser}", "expires_in": ctx.settings.webchat_token_ttl})
    response.headers["Cache-Control"] = "no-store"
    return response, 200
