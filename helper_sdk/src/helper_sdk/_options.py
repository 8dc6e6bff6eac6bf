"""Where a helper listens, what URL the core should call, and how it registers: arguments, then environment.

One place for the CLI and ``Helper.run`` so both read the same variables:
``HOST``, ``PORT``, ``HELPER_PUBLIC_URL``, ``SWITCHBOARD_CORE_URL`` and
``HELPER_REGISTRATION_TOKEN``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._errors import RegistrationError

__all__ = ["DEFAULT_CORE_URL", "DEFAULT_HOST", "DEFAULT_PORT", "RunOptions", "check_http_url", "resolve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8100
DEFAULT_CORE_URL = "http://127.0.0.1:8000"
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


@dataclass(frozen=True)
class RunOptions:
    host: str
    port: int
    public_url: str
    core_url: str
    token: str


def resolve(
    *,
    host: str | None = None,
    port: int | None = None,
    public_url: str | None = None,
    core_url: str | None = None,
    token: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunOptions:
    env = os.environ if environ is None else environ
    host = host or env.get("HOST") or DEFAULT_HOST
    if port is None:
        try:
            port = int(env.get("PORT") or DEFAULT_PORT)
        except ValueError:
            raise ValueError(f"PORT must be a number, not {env.get('PORT')!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    token = token or env.get("HELPER_REGISTRATION_TOKEN") or ""
    if not token:
        raise RegistrationError(
            "no registration token: pass --token or set HELPER_REGISTRATION_TOKEN to the core's "
            "HELPER_REGISTRATION_TOKEN (`make run` writes one to .run/helper-token)"
        )
    if not public_url:
        public_url = env.get("HELPER_PUBLIC_URL") or _local_url(host, port)
    core_url = core_url or env.get("SWITCHBOARD_CORE_URL") or DEFAULT_CORE_URL
    return RunOptions(
        host=host,
        port=port,
        public_url=check_http_url(public_url, "public URL").rstrip("/"),
        core_url=check_http_url(core_url, "core URL").rstrip("/"),
        token=token,
    )


def _local_url(host: str, port: int) -> str:
    if host in _WILDCARDS:  # listening everywhere: loopback is the address the local core may call
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def check_http_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"the {what} must be an http(s) URL without query or fragment, not {url!r}")
    return url
