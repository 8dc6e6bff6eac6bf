"""Who is calling a client door: an API key's tenant, or one web chat browser.

Every client door (``POST /v1/messages``, ``GET /v1/messages/<id>``, ``POST /v1/files``,
``GET /v1/files/<id>``) asks ``caller()`` first, before it reads a body. Two kinds of credential, both
``Authorization: Bearer …``:

- **An API key** (``API_KEYS``). The key's label is a tenant: its ``user`` names are its own, so
  ``alice`` under two labels is two people (session ``api:<label>:alice``), and what one tenant created is
  404 to every other.
- **A web chat browser token** (``wc1.<browser>.<expires>.<signature>``), which ``POST /v1/chat/token``
  signs for one browser. The browser's user is fixed by the token (``user`` must be it), its sessions are
  ``webchat:<browser>``, and nothing another browser created is readable with it.

Records carry ``owner`` (``key:<label>`` or ``chat:<browser>``); a request whose caller is not the owner
gets 404, the same answer as an id that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

from flask import request

from edge.context import edge
from edge.errors import Forbidden, Unauthorized
from edge.tokens import Signer
from tasks.settings import Settings, parse_api_keys

__all__ = ["Caller", "ClientUnauthorized", "browser_token", "caller", "optional_caller", "renewable_browser"]

BROWSER_PREFIX = "wc1"
BROWSER_ID_BYTES = 12


@dataclass(frozen=True)
class Caller:
    owner: str  # what records store: "key:<label>" or "chat:<browser>"
    sessions: str  # the start of this caller's session ids: "api:<label>:" or "webchat:<browser>"
    user: str | None = None  # the one user a browser token speaks for; None: the tenant names its users

    def session_id(self, user: str, session: str | None) -> str:
        """A user's sessions, namespaced by the caller and the user: no one can join another's.

        Unambiguous: a label holds no ``:``, a browser id is hex, and ``#`` is allowed in neither user
        nor session names."""
        base = self.sessions + (user if self.user is None else "")
        return base + (f"#{session}" if session else "")

    def speaks_for(self, user: str) -> None:
        """Forbidden unless this caller may send as ``user``."""
        if self.user is not None and user != self.user:
            raise Forbidden("this browser token speaks for its own user only", fields={"user": ["not yours"]})


class ClientUnauthorized(Unauthorized):
    headers = {"WWW-Authenticate": 'Bearer realm="Switchboard"'}


def caller() -> Caller:
    """The authenticated caller of a client door; 401 without a valid credential."""
    found = optional_caller()
    if found is None:
        if not edge().settings.api_keys:
            raise ClientUnauthorized("this route needs a client key (Authorization: Bearer <key>), and none is "
                                     "configured: set API_KEYS (make run writes one to .run/api-key)")
        raise ClientUnauthorized("this route needs a client key: Authorization: Bearer <key> (API_KEYS)")
    return found


def optional_caller() -> Caller | None:
    """The caller if the request carries a valid credential, else None."""
    token = _bearer()
    if token is None:
        return None
    settings = edge().settings
    if token.startswith(BROWSER_PREFIX + "."):
        browser = _browser(settings, token)
        return _browser_caller(browser) if browser else None
    label = _labels(settings.api_keys).get(hashlib.sha256(token.encode()).digest())
    return Caller(owner=f"key:{label}", sessions=f"api:{label}:") if label else None


def renewable_browser() -> str | None:
    """The browser id of a valid browser token on this request (to renew), else None."""
    token = _bearer()
    if token is None or not token.startswith(BROWSER_PREFIX + "."):
        return None
    return _browser(edge().settings, token)


def browser_token(settings: Settings, browser: str | None = None, *, now: float | None = None) -> tuple[str, str]:
    """(token, browser id): a new browser, or ``browser`` again with a fresh expiry."""
    browser = browser or secrets.token_hex(BROWSER_ID_BYTES)
    expires = int(now if now is not None else time.time()) + settings.webchat_token_ttl
    signature = _signer(settings.switchboard_secret).sign_until(expires, browser)
    return f"{BROWSER_PREFIX}.{browser}.{expires}.{signature}", browser


def _browser_caller(browser: str) -> Caller:
    return Caller(owner=f"chat:{browser}", sessions=f"webchat:{browser}", user=f"web-{browser}")


def _browser(settings: Settings, token: str) -> str | None:
    parts = token.split(".")
    if len(parts) != 4 or not settings.switchboard_secret:
        return None
    _, browser, expires, signature = parts
    if len(browser) != 2 * BROWSER_ID_BYTES or not all(c in "0123456789abcdef" for c in browser):
        return None
    return browser if _signer(settings.switchboard_secret).valid_until(signature, expires, browser) else None


def _bearer() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


@lru_cache(maxsize=8)
def _labels(api_keys: str) -> dict[bytes, str]:
    """Key digests -> labels: a dictionary look-up on a SHA-256 digest leaks nothing about the keys' bytes."""
    return {hashlib.sha256(key.encode()).digest(): label for key, label in parse_api_keys(api_keys).items()}


@lru_cache(maxsize=8)
def _signer(secret: str) -> Signer:
    return Signer(secret, "webchat-browser")
