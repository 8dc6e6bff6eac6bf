"""The attachment fetcher: allow-list on every hop, bounded redirects, size cap, credentials only to their host."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edge.media.fetch import Fetcher, FetchError, TooLarge, Transient
from tasks.outbound import HostPolicy

SEEN: list[dict[str, str]] = []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        SEEN.append({k.lower(): v for k, v in self.headers.items()})
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
