"""The attachment fetcher: allow-list on every hop, bounded redirects, size cap, credentials only to their host."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge.media.fetch import Fetcher, FetchError, TooLarge, TooSlow, Transient
from outbound_http.host_policy import HostPolicy

SEEN: list[dict[str, str]] = []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        SEEN.append({k.lower(): v for k, v in self.headers.items()})
        if self.path.startswith(("/drip", "/silent")):
            self._drip()
            return
        port = self.server.server_address[1]  # type: ignore[index]
        redirects = {"/moved": "/ok", "/away": "http://10.0.0.1/x", "/loop": "/loop",
                     "/other-host": f"http://127.0.0.2:{port}/ok"}
        routes = {"/ok": (200, b"hello"), "/big": (200, b"x" * 5000), "/down": (503, b"")}
        status, body = (302, b"") if self.path in redirects else routes.get(self.path, (404, b""))
        self.send_response(status)
        if status == 302:
            self.send_header("Location", redirects[self.path])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self) -> None:
        """A byte every 0.2 s: of the headers (``/drip-headers``) or of the body (``/drip-body``); or nothing."""
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        try:
            if self.path == "/silent":
                time.sleep(3)
                return
            if self.path == "/drip-headers":
                for byte in head:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            else:
                self.wfile.write(head)
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the fetcher hung up: what it should do

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)  # 127.0.0.2 is "another host" on loopback
    threading.Thread(target=server.serve_forever, daemon=True).start()
    SEEN.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_allowed_file_is_fetched_and_capped(base: str) -> None:
    fetcher = Fetcher(HostPolicy(["127.0.0.0/8"]), timeout=5)
    assert fetcher.get(f"{base}/ok", 100).data == b"hello"
    with pytest.raises(TooLarge):
        fetcher.get(f"{base}/big", 100)
    assert fetcher.get(f"{base}/moved", 100).data == b"hello"  # providers redirect media to their storage
    with pytest.raises(FetchError, match="not allowed"):  # every hop is checked against the allow-list
        fetcher.get(f"{base}/away", 100)
    with pytest.raises(FetchError, match="redirected more than"):
        fetcher.get(f"{base}/loop", 100)
    with pytest.raises(Transient):
        fetcher.get(f"{base}/down", 100)
    assert all("authorization" not in h for h in SEEN)


def test_a_host_outside_the_allow_list_is_refused(base: str) -> None:
    with pytest.raises(FetchError, match="not allowed"):
        Fetcher(HostPolicy(["10.0.0.0/8"]), timeout=5).get(f"{base}/ok", 100)
    assert SEEN == []


def test_basic_auth_goes_only_to_its_configured_host(base: str) -> None:
    Fetcher(HostPolicy(["127.0.0.0/8"]), timeout=5, basic_auth={"127.0.0.1": ("AC1", "tok")}).get(f"{base}/ok", 100)
    Fetcher(HostPolicy(["127.0.0.0/8"]), timeout=5, basic_auth={"api.twilio.com": ("AC1", "tok")}).get(
        f"{base}/ok", 100)
    assert SEEN[0]["authorization"] == "Basic QUMxOnRvaw==" and "authorization" not in SEEN[1]


def test_credentials_never_follow_a_redirect_to_another_host(base: str) -> None:
    fetcher = Fetcher(HostPolicy(["127.0.0.0/8"]), timeout=5, basic_auth={"127.0.0.1": ("AC1", "tok")})
    assert fetcher.get(f"{base}/other-host", 100).data == b"hello"
    assert "authorization" in SEEN[0] and "authorization" not in SEEN[1]


def test_a_body_slower_than_the_minimum_rate_is_dropped_soon_after_the_grace(base: str) -> None:
    """A per-read timeout never fires for a server sending a byte at a time; the rate check does."""
    fetcher = Fetcher(HostPolicy(["127.0.0.0/8"]), timeout=30, min_rate=100, min_rate_after=0.5)
    started = time.monotonic()
    with pytest.raises(TooSlow, match="MEDIA_FETCH_MIN_RATE"):
        fetcher.get(f"{base}/drip-body", 10_000)
    assert time.monotonic() - started < 10  # the grace and a read, far from the 30 s deadline


@pytest.mark.parametrize("path", ["/drip-headers", "/silent"])
def test_a_server_silent_for_the_grace_is_too_slow_not_transient(base: str, path: str) -> None:
    fetcher = Fetcher(HostPolicy(["127.0.0.0/8"]), timeout=30, min_rate=100, min_rate_after=0.1)
    with pytest.raises(TooSlow):
        fetcher.get(f"{base}{path}", 10_000)


@pytest.mark.parametrize("path", ["/drip-headers", "/drip-body"])
def test_the_deadline_holds_wherever_the_fetch_is_blocked(base: str, path: str) -> None:
    """Headers dripping a byte at a time are read by http.client, where no rate is checked: the timer shuts
    the socket at the deadline."""
    fetcher = Fetcher(HostPolicy(["127.0.0.0/8"]), timeout=1.5)  # no minimum rate: only the deadline
    started = time.monotonic()
    with pytest.raises(TooSlow, match="MEDIA_FETCH_TIMEOUT"):
        fetcher.get(f"{base}{path}", 10_000)
    assert time.monotonic() - started < 10


def test_a_file_at_a_fine_rate_is_fetched_whole(base: str) -> None:
    fetcher = Fetcher(HostPolicy(["127.0.0.0/8"]), timeout=10, min_rate=10, min_rate_after=0.1)
    assert fetcher.get(f"{base}/big", 10_000).data == b"x" * 5000
