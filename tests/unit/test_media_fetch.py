"""The attachment fetcher: allow-list, no redirects, size cap, Twilio basic auth only to its hosts."""

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
        routes = {"/ok": (200, b"hello"), "/big": (200, b"x" * 5000), "/moved": (302, b""), "/down": (503, b"")}
        status, body = routes.get(self.path, (404, b""))
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
    with pytest.raises(FetchError, match="302"):  # redirects are never followed
        fetcher.get(f"{base}/moved", 100)
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
