"""Outbound POSTs reuse keep-alive connections, and never reuse one left with unread bytes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core_worker.outbound_post import post
from outbound_http.host_policy import HostPolicy

POLICY = HostPolicy(["127.0.0.0/8"])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0
    big = b"x" * 5000


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = self.server.big if self.path == "/big" else b"ok"
        self.send_response(302 if self.path == "/redirect" else 200)
        if self.path == "/redirect":
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(server: _Server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_posts_to_one_target_share_a_connection(server: _Server) -> None:
    for _ in range(5):
        assert post(POLICY, _url(server, "/cb"), b"{}", {}, timeout=5).body == b"ok"
    assert server.connections == 1


def test_a_response_larger_than_kept_closes_its_connection(server: _Server) -> None:
    result = post(POLICY, _url(server, "/big"), b"{}", {}, timeout=5, max_response_bytes=100)
    assert result.body == b"x" * 100
    assert post(POLICY, _url(server, "/cb"), b"{}", {}, timeout=5).body == b"ok"  # not the rest of /big
    assert server.connections == 2


def test_redirects_are_returned_not_followed(server: _Server) -> None:
    result = post(POLICY, _url(server, "/redirect"), b"{}", {}, timeout=5)
    assert result.status == 302
    assert server.connections == 1
