"""A counting HTTP proxy for the openai backend's tests: it forwards every request to ``upstream`` and records the
most chat completions it had open at once, which is how many a batching server behind it could decode together.

``hold_until=n`` keeps each chat completion waiting at the proxy until n are open together, then lets them all on
(and every later one at once), so the count never depends on how fast the first answer comes back.
``hold_timeout`` only bounds that wait (once): a client that never sends n at once fails its test instead of
hanging it.
Answers are relayed whole (a stream too: its events arrive together), and a request counts as open until its
answer is sent.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["CountingProxy"]

FORWARDED_HEADERS = ("Content-Type", "Authorization", "Accept")


class CountingProxy:
    def __init__(self, upstream: str, *, hold_until: int = 1, hold_timeout: float = 30.0,
                 counted: str = "/chat/completions") -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.hold_until = hold_until
        self.hold_timeout = hold_timeout
        self.counted = counted
        self.open = 0
        self.max_open = 0
        self.requests = 0  # counted requests seen
        self._released = hold_until <= 1
        self._cond = threading.Condition()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real server: the client's Sessions reuse connections

            def do_GET(self) -> None:
                self._relay(b"")

            def do_POST(self) -> None:
                self._relay(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def _relay(self, body: bytes) -> None:
                counted = self.path.split("?", 1)[0].endswith(proxy.counted)
                if counted:
                    proxy._enter()
                try:
                    headers = {name: self.headers[name] for name in FORWARDED_HEADERS if self.headers[name]}
                    try:
                        status, content_type, data = proxy._forward(self.command, self.path, body, headers)
                    except OSError as exc:
                        status, content_type, data = 502, "text/plain", f"upstream failed: {exc}".encode()
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    if counted:
                        proxy._leave()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _enter(self) -> None:
        with self._cond:
            self.open += 1
            self.requests += 1
            self.max_open = max(self.max_open, self.open)
            if self.open >= self.hold_until:
                self._released = True
                self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._released, timeout=self.hold_timeout):
                self._released = True  # n never came: let everything on, so a failing test fails once, not n times

    def _leave(self) -> None:
        with self._cond:
            self.open -= 1

    def _forward(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=300)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type") or "application/octet-stream", resp.read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
