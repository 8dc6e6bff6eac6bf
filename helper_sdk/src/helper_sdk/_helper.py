"""``Helper``: the one object a helper author creates — a name, capabilities, and ways to serve them."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from types import FrameType, MappingProxyType
from typing import Any, TypeVar

from flask import Flask

from ._app import SecretSource, build_app
from ._capability import Capability, check_name, declare
from ._errors import ManifestError
from ._options import check_http_url, resolve

__all__ = ["Helper"]

log = logging.getLogger("helper_sdk")

F = TypeVar("F", bound=Callable[..., Any])

# What the core's manifest validation allows; checked here so a helper fails at import, not at registration.
MAX_CAPABILITIES = 32
MAX_VERSION = 64
MAX_DESCRIPTION = 2000


class Helper:
    """A named set of capabilities the core can call.

    ::

        helper = Helper("calculator", description="Arithmetic", version="1.0.0")

        @helper.capability(input_schema=CalcIn, output_schema=CalcOut, reply="direct")
        def calculate(data: dict, context: InvocationContext) -> dict:
            "Evaluate an arithmetic expression."
    """

    def __init__(
        self, name: str, *, description: str = "", version: str = "0.1.0", max_request_bytes: int = 1024 * 1024
    ) -> None:
        self.name = check_name(name, "helper name")
        if not isinstance(version, str) or not 0 < len(version.strip()) <= MAX_VERSION:
            raise ManifestError(f"version must be a non-empty string of at most {MAX_VERSION} characters")
        if len(description.strip()) > MAX_DESCRIPTION:
            raise ManifestError(f"the helper's description is longer than {MAX_DESCRIPTION} characters")
        self.description = description.strip()
        self.version = version.strip()
        self.max_request_bytes = max_request_bytes
        self._capabilities: dict[str, Capability] = {}

    def __repr__(self) -> str:
        return f"Helper({self.name!r}, capabilities={list(self._capabilities)})"

    @property
    def capabilities(self) -> Mapping[str, Capability]:
        return MappingProxyType(self._capabilities)

    def capability(
        self,
        *,
        input_schema: Any,
        output_schema: Any,
        name: str | None = None,
        description: str | None = None,
        accepts: Iterable[str] = (),
        produces: Iterable[str] = (),
        reply: str = "model",
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Declare the decorated ``handler(data, context) -> dict`` as a capability; it stays a plain function.

        ``name`` defaults to the function's name and ``description`` to its
        docstring. ``reply="direct"`` sends the output's ``text`` to the person
        as is; ``"model"`` (default) lets the core's model phrase the answer.
        ``timeout``: seconds the core waits per call (default: its HELPER_TIMEOUT).
        """

        def decorator(handler: F) -> F:
            capability = declare(
                handler,
                name=name,
                description=description,
                input_schema=input_schema,
                output_schema=output_schema,
                accepts=accepts,
                produces=produces,
                reply=reply,
                timeout=timeout,
            )
            if capability.name in self._capabilities:
                raise ManifestError(f"helper {self.name!r} already has a capability named {capability.name!r}")
            if len(self._capabilities) >= MAX_CAPABILITIES:
                raise ManifestError(
                    f"helper {self.name!r} has {MAX_CAPABILITIES} capabilities, the most the core takes"
                )
            self._capabilities[capability.name] = capability
            return handler

        return decorator

    def manifest(self, url: str) -> dict[str, Any]:
        """The registration body: ``POST /v1/helpers`` sends exactly this."""
        if not self._capabilities:
            raise ManifestError(f"helper {self.name!r} declares no capabilities")
        return {
            "name": self.name,
            "url": check_http_url(url, "public URL").rstrip("/"),
            "version": self.version,
            "description": self.description,
            "capabilities": [capability.manifest() for capability in self._capabilities.values()],
        }

    def create_app(self, secret: SecretSource = None) -> Flask:
        """The WSGI app. ``secret``: a whsec_… string, or a callable returning the current one (None → 503)."""
        return build_app(self, secret)

    def run(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        core_url: str | None = None,
        public_url: str | None = None,
        token: str | None = None,
    ) -> None:
        """Serve with werkzeug's development server, registered with the core; for production use the CLI.

        Unset arguments come from HOST, PORT, SWITCHBOARD_CORE_URL,
        HELPER_PUBLIC_URL and HELPER_REGISTRATION_TOKEN. Returns on SIGTERM or
        Ctrl-C after leaving the core; raises RegistrationError if refused.
        """
        from werkzeug.serving import make_server

        from ._lifecycle import Lifecycle

        options = resolve(host=host, port=port, public_url=public_url, core_url=core_url, token=token)
        self.manifest(options.public_url)  # no capabilities: fail before binding
        lifecycle = Lifecycle(self, core_url=options.core_url, public_url=options.public_url, token=options.token)
        server = make_server(options.host, options.port, self.create_app(lifecycle.current_secret), threaded=True)
        lifecycle.on_fatal = lambda _error: threading.Thread(target=server.shutdown, daemon=True).start()
        restore = _exit_on_sigterm()
        log.info("helper %r serving on http://%s:%s", self.name, options.host, server.server_port)
        lifecycle.start()
        try:
            server.serve_forever()
        except (KeyboardInterrupt, _Terminated):
            pass
        finally:
            lifecycle.stop()
            server.server_close()
            restore()
        if lifecycle.error is not None:
            raise lifecycle.error


class _Terminated(BaseException):
    """SIGTERM arrived: leave serve_forever like Ctrl-C does."""


def _exit_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM stop the server so ``finally`` deregisters; returns the undo. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return restore
