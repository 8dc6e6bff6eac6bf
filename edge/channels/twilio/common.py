"""What the Twilio SMS and voice channels share: signature checks, URLs, sessions, TwiML answers.

Twilio signs the URL *it* called (scheme, host, path and query) plus the POST
form.  Behind TLS termination or a proxy the edge sees another URL, so the
signed URL is rebuilt from ``PUBLIC_BASE_URL`` and the request's path and raw
query string; no proxy header is trusted for it.  With no auth token set the
webhooks refuse everything: they never run unsigned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from flask import Request, Response
from twilio.request_validator import SIGNATURE_HEADER, SIGNATURE_SETTINGS_HEADER, RequestValidator
from twilio.request_validator import get_signature_algorithm as signature_algorithm

from edge.errors import BadRequest, Forbidden
from tasks.settings import Settings

__all__ = [
    "ROUTE_PREFIX",
    "caller_session",
    "public_url",
    "require",
    "twiml",
    "verify_twilio_request",
]

ROUTE_PREFIX = "/v1/channels/twilio"
_E164 = re.compile(r"^\+[1-9]\d{5,14}\Z")


def public_url(settings: Settings, request: Request) -> str:
    """The URL Twilio called: ``PUBLIC_BASE_URL`` + path + the raw query string."""
    query = request.query_string.decode("utf-8", "replace")
    return settings.public_base_url.rstrip("/") + request.path + (f"?{query}" if query else "")


def verify_twilio_request(settings: Settings, request: Request) -> None:
    """Raise Forbidden unless ``X-Twilio-Signature`` matches; called before anything else is read."""
    if not settings.twilio_auth_token:
        raise Forbidden("Twilio channel not configured")
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        raise Forbidden(f"missing {SIGNATURE_HEADER}")
    algorithm = signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
    validator = RequestValidator(settings.twilio_auth_token)
    if not validator.validate(public_url(settings, request), request.form, signature, algorithm):
        raise Forbidden(f"{SIGNATURE_HEADER} does not match (is PUBLIC_BASE_URL the URL Twilio calls?)")


def require(form: Mapping[str, str], *names: str) -> list[str]:
    """The named form fields, or a 400 naming the missing ones."""
    missing = [name for name in names if not form.get(name)]
    if missing:
        raise BadRequest("missing Twilio fields", fields={name: ["required"] for name in missing})
    return [form[name] for name in names]


def caller_session(number: str, *, channel: str, shared: bool, fallback: str) -> str:
    """``twilio:<E.164>`` shared by texts and calls; unknown or hidden numbers never share one."""
    if not _E164.match(number):
        return f"{channel}:{fallback}"
    return f"twilio:{number}" if shared else f"{channel}:{number}"


def twiml(document: object) -> Response:
    """A TwiML answer (``MessagingResponse``/``VoiceResponse``) as ``text/xml``."""
    return Response(str(document), status=200, mimetype="text/xml")
