"""The operator's door: ``GET /v1/status``, ``GET /status`` and ``GET /metrics`` show every person's queues,
dead letters and message ids, so only the operator may read them.

With ``OPERATOR_TOKEN`` set, a request must carry it: ``Authorization: Bearer <token>`` (Prometheus'
``authorization`` setting), or HTTP Basic with the token as the password, which is how a browser opening the
status page asks for it. Without a token the routes answer loopback callers only, and refuse any request that
carries forwarding headers: behind a reverse proxy on the same host every caller would look like loopback.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from flask import request
from flask.typing import ResponseReturnValue

from edge.context import edge
from edge.errors import Forbidden, Unauthorized

__all__ = ["FORWARDING_HEADERS", "operator_route"]

FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")
REALM = "Switchboard operator"

Route = TypeVar("Route", bound=Callable[..., ResponseReturnValue])


def operator_route(view: Route) -> Route:
    """Let the request through only for the operator (see the module's docstring)."""

    @wraps(view)
    def guarded(*args: object, **kwargs: object) -> ResponseReturnValue:
        check_operator()
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]


def check_operator() -> None:
    token = edge().settings.operator_token
    if not token:
        if not _loopback() or any(name in request.headers for name in FORWARDING_HEADERS):
            raise Forbidden("operator routes answer loopback only until OPERATOR_TOKEN is set")
        return
    presented = _presented_token()
    if presented is None or not hmac.compare_digest(presented.encode(), token.encode()):
        raise OperatorUnauthorized("this route needs the operator token (OPERATOR_TOKEN)")


class OperatorUnauthorized(Unauthorized):
    """401 with a challenge a browser answers with its login prompt, and Prometheus with its bearer token."""

    headers = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'}


def _presented_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def _loopback() -> bool:
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)
