"""Outbound HTTP that can only reach allowed hosts.

A ``reply_url`` or a helper URL comes from outside, so a POST to it could be
turned against internal services (SSRF). Every outbound call goes through
here: the URL's host must be named in ``SWITCHBOARD_ALLOWED_HOSTS`` or
resolve only to addresses inside its CIDRs; the connection is made to the
address that was checked (no second DNS lookup to rebind), and redirects are
never followed.  IPv4-mapped IPv6 addresses are checked as the IPv4 address
they are, and a host allowed by name may still never resolve to a
link-local (cloud metadata), unspecified or multicast address unless a CIDR
allows it: whoever controls the name's DNS could point it there.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3

__all__ = ["BlockedURL", "HTTPResult", "HostPolicy", "OutboundError", "Target", "post"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundError(Exception):
    """An outbound call could not be made (network, timeout, TLS)."""


class BlockedURL(OutboundError):
    """The URL is malformed or points somewhere we may not call."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked IP the connection goes to


@dataclass(frozen=True)
class HTTPResult:
    status: int
    body: bytes
    headers: Mapping[str, str]


class HostPolicy:
    """Allow-list of host names (exact, or ``*.example.com``) and CIDRs."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[IPNetwork] = []
        self.names: list[str] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.append(entry.lower().rstrip("."))

    def _name_allowed(self, host: str) -> bool:
        for name in self.names:
            if name.startswith("*.") and host.endswith(name[1:]):
                return True
            if host == name:
                return True
        return False

    def _address_allowed(self, address: IPAddress) -> bool:
        return any(address in net for net in self.networks)

    def check(self, url: str) -> Target:
        """Validate ``url`` and pick the address to connect to; raise BlockedURL if not allowed."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise BlockedURL(f"scheme {parts.scheme!r} is not allowed (http or https only)")
        if parts.username or parts.password:
            raise BlockedURL("credentials in URLs are not allowed")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise BlockedURL("URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise BlockedURL(f"bad port in URL: {exc}") from exc
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        named = self._name_allowed(host)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise BlockedURL(f"host {host!r} does not resolve") from exc
        addresses = [_plain(str(info[4][0])) for info in infos]
        if not named and not all(self._address_allowed(a) for a in addresses):
            raise BlockedURL(f"host {host!r} is not in SWITCHBOARD_ALLOWED_HOSTS")
        for address in addresses:
            if _never_by_name(address) and not self._address_allowed(address):
                raise BlockedURL(f"host {host!r} resolves to {address}: only a CIDR in SWITCHBOARD_ALLOWED_HOSTS "
                                 "can allow link-local (cloud metadata), unspecified or multicast addresses")
        return Target(parts.scheme, host, port, path, str(addresses[0]))


def _plain(text: str) -> IPAddress:
    """The address as checked: no IPv6 zone, an IPv4-mapped IPv6 address as the IPv4 address it is."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _never_by_name(address: IPAddress) -> bool:
    """Addresses an allowed *name* may not lead to (DNS can be changed by whoever owns the name)."""
    return address.is_link_local or address.is_unspecified or address.is_multicast


def post(
    policy: HostPolicy,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    max_response_bytes: int = 262_144,
) -> HTTPResult:
    """POST ``body`` to ``url`` through the allow-list; no redirects, no retries (callers decide)."""
    target = policy.check(url)
    default_port = 443 if target.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    pool = _POOLS.get(target)
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
            response.release_conn()
        return HTTPResult(response.status, content, dict(response.headers))
    except urllib3.exceptions.HTTPError as exc:
        raise OutboundError(f"POST {target.scheme}://{target.host}:{target.port} failed: {exc}") from exc


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
            return urllib3.HTTPSConnectionPool(
                target.address, target.port, server_hostname=target.host, assert_hostname=target.host,
                ssl_context=self._tls, retries=False, maxsize=4, block=False,
            )
        return urllib3.HTTPConnectionPool(target.address, target.port, retries=False, maxsize=4, block=False)

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
os.register_at_fork(after_in_child=_POOLS.forget)
