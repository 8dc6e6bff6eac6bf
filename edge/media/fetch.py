"""GET an attachment through the outbound allow-list: no redirects, resolved address pinned, size capped.

Provider media (Twilio) needs basic auth; the credentials are only ever sent
to the hosts configured for them, never to an arbitrary attachment URL.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import urllib3

from tasks.outbound import BlockedURL, HostPolicy, OutboundError

__all__ = ["FetchError", "Fetched", "Fetcher", "TooLarge", "Transient"]


MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchError(OutboundError):
    """The attachment cannot be fetched (permanent: retrying will not help)."""


class Transient(FetchError):
    """A network error or a 5xx/429: worth retrying with backoff."""


class TooLarge(FetchError):
    """The attachment is larger than its limit."""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str


@dataclass
class Fetcher:
    policy: HostPolicy
    timeout: float = 20.0
    basic_auth: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # host -> (user, password)

    def get(self, url: str, max_bytes: int) -> Fetched:
        """The file at ``url``. Redirects are followed (providers such as Twilio redirect media to their
        storage) at most ``MAX_REDIRECTS`` times, each hop checked against the allow-list again, and
        credentials are sent only to the host they are configured for."""
        for _ in range(MAX_REDIRECTS + 1):
            fetched = self._get_once(url, max_bytes)
            if isinstance(fetched, Fetched):
                return fetched
            url = fetched  # the next hop
        raise FetchError(f"the file's server redirected more than {MAX_REDIRECTS} times")

    def _get_once(self, url: str, max_bytes: int) -> Fetched | str:
        try:
            target = self.policy.check(url)
        except BlockedURL as exc:
            raise FetchError(f"the attachment's address is not allowed ({exc})") from exc
        headers = {"Host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}",
                   "User-Agent": "switchboard-convert"}
        credentials = self.basic_auth.get(target.host)
        if credentials:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        pool: urllib3.HTTPConnectionPool
        timeout = urllib3.Timeout(connect=min(self.timeout, 10.0), read=self.timeout)
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                target.address, target.port, server_hostname=target.host, assert_hostname=target.host,
                ssl_context=ssl.create_default_context(), timeout=timeout, retries=False,
            )
        else:
            pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, retries=False)
        try:
            response = pool.urlopen("GET", target.path, headers=headers, redirect=False, preload_content=False,
                                    assert_same_host=False)
            try:
                if response.status in REDIRECTS and response.headers.get("Location"):
                    return urljoin(url, response.headers["Location"])
                if response.status == 429 or response.status >= 500:
                    raise Transient(f"the file's server answered {response.status}")
                if response.status != 200:
                    raise FetchError(f"the file's server answered {response.status}")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise TooLarge(f"the file is larger than {max_bytes} bytes")
                data = response.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise TooLarge(f"the file is larger than {max_bytes} bytes")
                content_type = response.headers.get("Content-Type", "")
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            raise Transient(f"GET {target.scheme}://{target.host}:{target.port} failed: {exc}") from exc
        finally:
            pool.close()
        return Fetched(data, content_type)


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")
