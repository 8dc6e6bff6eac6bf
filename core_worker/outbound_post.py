"""The core's outbound POSTs (reply callbacks, helper calls): allow-listed, pooled, over by a total deadline.

Every URL is checked by ``outbound_http.host_policy.HostPolicy`` and the connection goes to the address it checked;
redirects are never followed.  urllib3's ``Timeout(total=…)`` bounds each socket operation, not the call: a
receiver that sends its answer one byte every few seconds never lets one read time out, and held a
delivery thread for as long as it liked.  So every POST has a total deadline, kept by one thread per process
(the cutter): at the deadline it shuts down the socket of a POST still running, wherever it is (sending,
waiting for the status line, reading the body), the blocked call returns at once with an error, and the
connection is dropped, never pooled again.  A response is capped at ``max_response_bytes``, so the deadline
is also its minimum rate.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
import urllib3.connection

from outbound_http.host_policy import HostPolicy, OutboundError, Target

__all__ = ["DeadlineCutter", "HTTPResult", "post"]


@dataclass(frozen=True)
class HTTPResult:
    status: int
    body: bytes
    headers: Mapping[str, str]


@dataclass(eq=False)
class _Watch:
    """One POST's deadline and the sockets it used; ``over`` once finished or cut (under the lock)."""

    deadline: float
    sockets: list[socket.socket] = field(default_factory=list)
    over: bool = False
    cut: bool = False


class DeadlineCutter:
    """Shuts down the sockets of calls still running at their deadline; one lazily started thread."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._forget()

    def _forget(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, timeout: float) -> _Watch:
        watch = _Watch(self._clock() + timeout)
        with self._cond:
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="outbound-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
        return watch

    def uses(self, watch: _Watch, sock: socket.socket) -> None:
        with self._cond:
            watch.sockets.append(sock)
            if watch.cut:  # the deadline passed before the request started
                _shut(sock)

    def finish(self, watch: _Watch) -> bool:
        """End the watch; True if its deadline cut it (its response, if any, is not to be trusted)."""
        with self._cond:
            watch.over = True
            return watch.cut

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].over:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                watch = heapq.heappop(self._heap)[2]
                watch.cut = watch.over = True
                for sock in watch.sockets:
                    _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Shut the socket down under a call blocked in it: the call returns at once with an error."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_CUTTER = DeadlineCutter()
_CURRENT = threading.local()  # the watch of the POST this thread is making


class _Watched:
    """A connection that hands its socket to the current POST's watch: when it connects, and before each
    request on a kept-alive one.  The socket, not the connection: http.client lets go of the connection's
    socket once a response is to be read to its close."""

    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._watched()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._watched()
        super().request(*args, **kwargs)  # type: ignore[misc]

    def _watched(self) -> None:
        watch: _Watch | None = getattr(_CURRENT, "watch", None)
        if watch is not None and self.sock is not None:
            _CUTTER.uses(watch, self.sock)


class _WatchedHTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


def post(
    policy: HostPolicy,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    max_response_bytes: int = 262_144,
) -> HTTPResult:
    """POST ``body`` to ``url`` through the allow-list, all over within ``timeout`` seconds; no redirects,
    no retries (callers decide)."""
    target = policy.check(url)
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    where = f"POST {target.scheme}://{target.host}:{target.port}"
    pool = _POOLS.get(target)
    watch = _CUTTER.watch(timeout)
    _CURRENT.watch = watch
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={**headers, "Host": host_header},
            redirect=False,
            preload_content=False,
            assert_same_host=False,
            timeout=urllib3.Timeout(total=timeout),
        )
        try:
            content = response.read(max_response_bytes)
            if response.read(1):  # more than we keep: never hand back a connection with unread bytes
                response.close()
        finally:
            if _CUTTER.finish(watch):
                response.close()
            response.release_conn()
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if _CUTTER.finish(watch):
            raise OutboundError(f"{where} did not finish within {timeout:g} s") from exc
        raise OutboundError(f"{where} failed: {exc}") from exc
    finally:
        _CURRENT.watch = None
    if watch.cut:  # a body ended by the cut, not by the receiver
        raise OutboundError(f"{where} did not finish within {timeout:g} s")
    return HTTPResult(response.status, content, dict(response.headers))


class _PoolCache:
    """Keep-alive connection pools per checked target (scheme, host, port, pinned address).

    A new TCP (and TLS) connection per callback cost more than the rest of a delivery; a pool is keyed by
    the address the policy just checked, so a host that resolves elsewhere gets a new pool, never a
    connection to an address that was not checked.  Least recently used pools are closed past ``size``.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._pools: OrderedDict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def get(self, target: Target) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, target.host, target.port, target.address)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            pool = self._new(target)
            self._pools[key] = pool
            while len(self._pools) > self.size:
                _, old = self._pools.popitem(last=False)
                old.close()
            return pool

    def _new(self, target: Target) -> urllib3.HTTPConnectionPool:
        if target.scheme == "https":
            if self._tls is None:  # loading the CA bundle takes milliseconds: once per process
                self._tls = ssl.create_default_context()
            tls = urllib3.HTTPSConnectionPool(
                target.address, target.port, server_hostname=target.host, assert_hostname=target.host,
                ssl_context=self._tls, retries=False, maxsize=4, block=False,
            )
            tls.ConnectionCls = _WatchedHTTPSConnection
            return tls
        plain = urllib3.HTTPConnectionPool(target.address, target.port, retries=False, maxsize=4, block=False)
        plain.ConnectionCls = _WatchedHTTPConnection
        return plain

    def clear(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    def forget(self) -> None:
        """After fork: the child must not share the parent's sockets (dropped, not closed)."""
        self._lock = threading.Lock()
        self._pools = OrderedDict()


_POOLS = _PoolCache()


def _after_fork() -> None:
    _POOLS.forget()
    _CUTTER._forget()


os.register_at_fork(after_in_child=_after_fork)
