"""Every exception the SDK raises or understands, and the HTTP status each one means.

::

    HelperError            raise it in a capability or its schema's hooks: answered with .status (default 422)
     │                     and {"error", "fields"?}; a 400/404/409/413/415/422 is the answer about this input,
     │                     and the core gives the message to the person ("The calculator couldn't do that: …")
     └── Unavailable       temporary trouble: 503 with Retry-After, the core tries again later
    ManifestError          a helper or capability declaration is wrong (raised at import time, never at a call)
    RegistrationError      the core refused the registration for good (bad token, malformed manifest)

Any other exception escaping a capability is a bug in the helper: it is
logged and answered ``500 {"error": "internal error"}`` without details.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["HelperError", "ManifestError", "RegistrationError", "Unavailable"]


class HelperError(Exception):
    """The capability cannot answer this call; ``status`` and ``message`` go back to the core as they are.

    With a 4xx status (default 422) this is the helper's answer about the input, not a failure: the core
    does not retry it, does not count it against the helper's circuit, and shows ``message`` to the
    person. Write it for them, in one line ("division by zero"). A 5xx means the helper is failing.
    """

    def __init__(self, message: str, *, status: int = 422, fields: Mapping[str, Any] | None = None) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"HelperError status must be a 4xx or 5xx code, not {status}")
        super().__init__(message)
        self.message = message
        self.status = status
        self.fields = dict(fields) if fields else None


class Unavailable(HelperError):
    """A dependency of the capability is down or overloaded: the core should retry after ``retry_after`` seconds."""

    def __init__(self, message: str = "temporarily unavailable", *, retry_after: int = 30) -> None:
        super().__init__(message, status=503)
        self.retry_after = max(0, int(retry_after))


class ManifestError(ValueError):
    """A helper or capability declaration the core would reject; raised when it is declared, not when it is called."""


class RegistrationError(Exception):
    """The core refused the registration and retrying will not help (401 bad token, 400 malformed manifest)."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
