"""A callback or helper POST is over by its deadline, however slowly the receiver drips its answer.

A per-read timeout never fires against a receiver that sends one byte every 0.2 s; before the cutter, a POST
with a 1.5 s timeout took as long as the receiver liked: 39.9 s for the sized body below, 40.1 s for the
unsized one, and the POST then reported success.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from core_worker.outbound_post import DeadlineCutter, post
from outbound_http.host_policy import HostPolicy, OutboundError

POLICY = HostPolicy(["127.0.0.0/8"])
DRIP = 0.2  # seconds between two bytes
ANSWERS = {
    # path -> what the receiver sends, one byte every DRIP seconds after the first byte of the body
    "/status": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + b" " * 200,
    "/body": b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + b"x" * 200,
    "/unsized": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 200,
}


class _DripServer:
    """Reads a request, then answers it byte by byte (headers at once for the body paths)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                path = request.split(b" ", 2)[1].decode()
                if path == "/fast":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast")
                    return
                answer = ANSWERS[path]
                start = 0 if path == "/status" else answer.index(b"\r\n\r\n") + 4
                conn.sendall(answer[:start])
                for i in range(start, len(answer)):
                    if self.closed.is_set():
                        return
                    conn.sendall(answer[i:i + 1])
                    time.sleep(DRIP)
            except OSError:
                return

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


@pytest.fixture
def server() -> Iterator[_DripServer]:
    srv = _DripServer()
    yield srv
    srv.close()


@pytest.mark.parametrize("path", sorted(ANSWERS))
def test_a_dripping_receiver_is_cut_at_the_deadline(server: _DripServer, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(OutboundError, match=r"did not finish within 1\.5 s"):
        post(POLICY, server.url(path), b"{}", {}, timeout=1.5)
    assert time.monotonic() - started < 1.5 + 2.0  # cut near the deadline, never the 40 s the drip takes


def test_the_next_post_to_the_same_receiver_gets_a_fresh_connection(server: _DripServer) -> None:
    with pytest.raises(OutboundError):
        post(POLICY, server.url("/body"), b"{}", {}, timeout=1.0)
    assert post(POLICY, server.url("/fast"), b"{}", {}, timeout=5).body == b"fast"


def test_a_post_finished_in_time_is_never_cut_later(server: _DripServer) -> None:
    result = post(POLICY, server.url("/fast"), b"{}", {}, timeout=0.5)
    time.sleep(0.8)  # past the deadline: the cutter must leave the pooled connection alone
    assert result.body == b"fast"
    assert post(POLICY, server.url("/fast"), b"{}", {}, timeout=5).body == b"fast"


def test_the_cutter_ends_only_watches_past_their_deadline() -> None:
    now = [100.0]
    cutter = DeadlineCutter(clock=lambda: now[0])
    early, late = cutter.watch(1.0), cutter.watch(60.0)
    now[0] = 102.0
    with cutter._cond:
        cutter._cond.notify()
    for _ in range(100):
        if early.cut:
            break
        time.sleep(0.01)
    assert cutter.finish(early) is True
    assert cutter.finish(late) is False
