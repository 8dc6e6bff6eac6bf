"""GET an attachment through the outbound allow-list: resolved address pinned, size, time and rate capped.

Provider media (Twilio) needs basic auth; the credentials are only ever sent
to the hosts configured for them, never to an arbitrary attachment URL.

A per-read timeout alone lets a server that sends a byte every 10 s hold a
thread for as long as it likes (eight of them held the whole io pool for
minutes). So a fetch has a total deadline (``MEDIA_FETCH_TIMEOUT``, redirects
included), enforced by a timer that shuts the socket down wherever the fetch
is (connecting, reading headers or the body), and a minimum rate
(``MEDIA_FETCH_MIN_RATE`` bytes/s once ``MEDIA_FETCH_MIN_RATE_AFTER`` seconds
have passed, and no read may wait longer than that grace). Each ends the fetch
for good: a server that slow is not retried.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import urllib3
import urllib3.connection

from outbound_http.host_policy import BlockedURL, HostPolicy, OutboundError

__all__ = ["FetchError", "Fetched", "Fetcher", "TooLarge", "TooSlow", "Transient"]


MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchError(OutboundError):
    """The attachment cannot be fetched (permanent: retrying will not help)."""


class Transient(FetchError):
    """A network error or a 5xx/429: worth retrying with backoff."""


class TooLarge(FetchError):
    """The attachment is larger than its limit."""


class TooSlow(FetchError):
    """The server did not send the file within the deadline, or sent it slower than the minimum rate."""


READ_TIMEOUT = 10.0  # seconds one read may wait, inside the fetch's deadline
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str


@dataclass
class Fetcher:
    policy: HostPolicy
    timeout: float = 20.0  # the whole fetch, redirects included
    basic_auth: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # host -> (user, password)
    min_rate: float = 0.0  # bytes/s the body must keep up once min_rate_after seconds passed; 0: no minimum
    min_rate_after: float = 5.0

    def get(self, url: str, max_bytes: int) -> Fetched:
        """The file at ``url``. Redirects are followed (providers such as Twilio redirect media to their
        storage) at most ``MAX_REDIRECTS`` times, each hop checked against the allow-list again, and
        credentials are sent only to the host they are configured for."""
        deadline = time.monotonic() + self.timeout
        for _ in range(MAX_REDIRECTS + 1):
            fetched = self._get_once(url, max_bytes, deadline)
            if isinstance(fetched, Fetched):
                return fetched
            url = fetched  # the next hop
        raise FetchError(f"the file's server redirected more than {MAX_REDIRECTS} times")

    def _get_once(self, url: str, max_bytes: int, deadline: float) -> Fetched | str:
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
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TooSlow(f"the file's server did not send it within {self.timeout:g} s (MEDIA_FETCH_TIMEOUT)")
        # Each connect or read; with a minimum rate, a server silent for its grace is too slow as well.
        silence = min(READ_TIMEOUT, self.min_rate_after) if self.min_rate else READ_TIMEOUT
        timeout = min(remaining, silence)
        connection: urllib3.connection.HTTPConnection
        if target.scheme == "https":
            connection = urllib3.connection.HTTPSConnection(
                target.address, target.port, timeout=timeout, server_hostname=target.host,
                assert_hostname=target.host, ssl_context=ssl.create_default_context())
        else:
            connection = urllib3.connection.HTTPConnection(target.address, target.port, timeout=timeout)
        cut = threading.Timer(remaining, _shut, args=(connection,))  # the deadline, wherever the fetch is
        cut.daemon = True
        cut.start()
        try:
            connection.request("GET", target.path, headers=headers, preload_content=False)
            response = connection.getresponse()
            if response.status in REDIRECTS and response.headers.get("Location"):
                return urljoin(url, response.headers["Location"])
            if response.status == 429 or response.status >= 500:
                raise Transient(f"the file's server answered {response.status}")
            if response.status != 200:
                raise FetchError(f"the file's server answered {response.status}")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise TooLarge(f"the file is larger than {max_bytes} bytes")
            data = self._body(response, max_bytes, deadline)
            content_type = response.headers.get("Content-Type", "")
        except (TimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:  # a read waited ``timeout`` in vain
            if time.monotonic() >= deadline - 0.05:
                raise TooSlow(f"the file's server did not send it within {self.timeout:g} s "
                              "(MEDIA_FETCH_TIMEOUT)") from exc
            raise TooSlow(f"the file's server sent nothing for {timeout:.0f} s") from exc
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            if time.monotonic() >= deadline - 0.05:
                raise TooSlow(f"the file's server did not send it within {self.timeout:g} s "
                              "(MEDIA_FETCH_TIMEOUT)") from exc
            raise Transient(f"GET {target.scheme}://{target.host}:{target.port} failed: {exc}") from exc
        finally:
            cut.cancel()
            connection.close()
        return Fetched(data, content_type)

    def _body(self, response: urllib3.BaseHTTPResponse, max_bytes: int, deadline: float) -> bytes:
        """The body, read as it arrives (``read1``: one receive at a time), the rate checked after each."""
        started, received = time.monotonic(), 0
        chunks: list[bytes] = []
        while True:
            chunk = response.read1(min(CHUNK, max_bytes + 1 - received))
            if not chunk:
                if time.monotonic() >= deadline - 0.05:  # the timer shut the socket: not the file's end
                    raise TooSlow(f"the file's server did not send it within {self.timeout:g} s "
                                  "(MEDIA_FETCH_TIMEOUT)")
                return b"".join(chunks)
            chunks.append(chunk)
            received += len(chunk)
            if received > max_bytes:
                raise TooLarge(f"the file is larger than {max_bytes} bytes")
            elapsed = time.monotonic() - started
            if self.min_rate and elapsed > self.min_rate_after and received < self.min_rate * elapsed:
                raise TooSlow(f"the file's server sent {received} bytes in {elapsed:.0f} s, slower than "
                              f"{self.min_rate:g} bytes/s (MEDIA_FETCH_MIN_RATE)")
            if time.monotonic() >= deadline:
                raise TooSlow(f"the file's server did not send it within {self.timeout:g} s (MEDIA_FETCH_TIMEOUT)")


def _shut(connection: urllib3.connection.HTTPConnection) -> None:
    """Shut the socket down under a fetch blocked in it: the blocked call returns at once with an error."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower().rstrip(".")
