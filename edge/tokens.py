"""Short HMAC tokens the edge gives out and checks itself: web chat browser tokens and signed file URLs.

Each use has its own key, derived from ``SWITCHBOARD_SECRET`` and a purpose string, so a signature made for
one purpose (a file URL) is never valid for another (a browser token). Parts are length-prefixed before
signing (``tasks.keys.scoped``): ``("ab", "c")`` and ``("a", "bc")`` sign differently.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from tasks.keys import scoped

__all__ = ["Signer"]


class Signer:
    def __init__(self, secret: str, purpose: str) -> None:
        if not secret:
            raise ValueError("SWITCHBOARD_SECRET is not set: the edge cannot sign tokens")
        self._key = hmac.new(secret.encode(), f"switchboard/{purpose}/v1".encode(), hashlib.sha256).digest()

    def sign(self, *parts: str) -> str:
        digest = hmac.new(self._key, scoped(*parts).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")

    def valid(self, signature: str, *parts: str) -> bool:
        return hmac.compare_digest(signature.encode(), self.sign(*parts).encode())

    def sign_until(self, expires: int, *parts: str) -> str:
        return self.sign(str(expires), *parts)

    def valid_until(self, signature: str, expires: str, *parts: str, now: float | None = None) -> bool:
        """``signature`` signs ``parts`` with the expiry ``expires`` (Unix seconds), which has not passed."""
        if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
            return False
        return int(expires) > (time.time() if now is None else now) and self.valid(signature, expires, *parts)
