"""Switchboard helper SDK: give the core a capability with a small signed HTTP service.

::

    from helper_sdk import Helper, InvocationContext

    helper = Helper("greeter", description="Greets people", version="1.0.0")

    @helper.capability(input_schema=GreetIn, output_schema=GreetOut, reply="direct")
    def greet(data: dict, context: InvocationContext) -> dict:
        "Greet someone by name."
        return {"text": f"Hello, {data['name']}!"}

    # switchboard-helper run greeter:helper --core-url http://127.0.0.1:8000

Its own distribution (``switchboard-helper-sdk``): Flask, marshmallow,
requests, standardwebhooks and gunicorn only. Everything not listed in
``__all__`` is private; test doubles are in ``helper_sdk.testing``.
"""

from __future__ import annotations

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ._capability import InvocationContext
from ._errors import HelperError, ManifestError, RegistrationError, Unavailable
from ._helper import Helper
from ._lifecycle import Lifecycle

__all__ = [
    "Helper",
    "HelperError",
    "InvocationContext",
    "Lifecycle",
    "ManifestError",
    "RegistrationError",
    "Unavailable",
    "WebhookVerificationError",
    "__version__",
    "verify_core_signature",
]

__version__ = "0.1.0"


def verify_core_signature(secret: str, body: bytes, headers: dict[str, str]) -> None:
    """Raise WebhookVerificationError unless the core signed ``body`` with ``secret`` (for helpers not using Helper)."""
    Webhook(secret).verify(body, headers, json_parse=False)
