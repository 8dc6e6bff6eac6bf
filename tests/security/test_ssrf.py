"""SSRF through ``reply_url``, attachment URLs and helper URLs.

Every outbound call (callbacks, helper calls, attachment fetches) goes
through ``outbound_http.host_policy.HostPolicy.check``: the resolved addresses must all
be allowed, the connection goes to the checked address (one resolution, no
rebinding), and ``post`` never follows a redirect.  The resolver is replaced
in the tests of names; literal addresses go through the system's own
``getaddrinfo`` (which is what turns ``2130706433`` into 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask.testing import FlaskClient

from core_worker.outbound_post import post
from edge.media.fetch import Fetcher, FetchError
from outbound_http import host_policy as outbound
from outbound_http.host_policy import BlockedURL, HostPolicy
from tests.security import providers
from tests.support.factories import keyed

LOOPBACK_ONLY = HostPolicy(["127.0.0.0/8", "::1", "localhost"])  # the default SWITCHBOARD_ALLOWED_HOSTS
NO_LOOPBACK = HostPolicy(["10.99.0.0/16"])

PRIVATE_AND_SPECIAL = [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS metadata over IPv6 (unique local)
    "http://10.0.0.1/", "http://172.16.0.1/", "http://172.31.255.254/", "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://[fc00::1]/", "http://[fe80::1]/",
    "http://[::ffff:10.0.0.1]/", "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "http://0.0.0.0:8000/", "http://[::]:8000/",  # "this host": reaches local services on Linux
    "http://224.0.0.1/",
]

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1/", "http://127.1/", "http://127.255.255.254/", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",  # decimal
    "http://017700000001/", "http://0177.0.0.1/",  # octal
    "http://0x7f000001/", "http://0x7f.0.0.1/",  # hex
    "http://localhost/", "http://LOCALHOST./",  # a name the system resolves to loopback
]


@pytest.mark.parametrize("url", PRIVATE_AND_SPECIAL)
def test_private_link_local_and_special_addresses_are_refused(url: str) -> None:
    with pytest.raises(BlockedURL):
        LOOPBACK_ONLY.check(url)


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_refused_when_loopback_is_not_allowed(url: str) -> None:
    with pytest.raises(BlockedURL):
        NO_LOOPBACK.check(url)


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS[:-2])
def test_the_same_spellings_are_loopback_when_it_is_allowed(url: str) -> None:
    assert LOOPBACK_ONLY.check(url).address in ("127.0.0.1", "127.255.255.254", "::1")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "file:///etc/passwd", "gopher://127.0.0.1/", "http:///x",
                                 "http://user:pw@127.0.0.1/", "http://127.0.0.1:99999/"])
def test_other_schemes_credentials_and_bad_ports_are_refused(url: str) -> None:
    with pytest.raises(BlockedURL):
        LOOPBACK_ONLY.check(url)


# --- names: the resolver is replaced ---------------------------------------------------------------------------

Resolver = Callable[..., list[Any]]


SYSTEM_GETADDRINFO = socket.getaddrinfo


def resolving(table: dict[str, list[str]], calls: list[str] | None = None) -> Resolver:
    """A getaddrinfo that answers names from ``table`` (and records them); IP literals as the system does
    (``outbound.socket`` is the socket module itself, so urllib3's own connect goes through here too)."""

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return SYSTEM_GETADDRINFO(host, port, *args, **kwargs)
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "not found")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[host]]

    return getaddrinfo


def test_a_name_resolving_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbound.socket, "getaddrinfo", resolving({
        "internal.example.com": ["10.0.0.5"],
        "metadata.example.com": ["169.254.169.254"],
        "mixed.example.com": ["127.0.0.1", "10.0.0.5"],  # every address must be allowed, not just the first
        "mapped.example.com": ["::ffff:192.168.0.1"],
        "loop.example.com": ["127.0.0.1"],
    }))
    for host in ("internal", "metadata", "mixed", "mapped"):
        with pytest.raises(BlockedURL):
            LOOPBACK_ONLY.check(f"https://{host}.example.com/hook")
    assert LOOPBACK_ONLY.check("https://loop.example.com/hook").address == "127.0.0.1"


def test_a_name_allowed_by_name_still_cannot_lead_to_cloud_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever controls an allowed name's DNS could point it at 169.254.169.254; only a CIDR can allow that."""
    monkeypatch.setattr(outbound.socket, "getaddrinfo", resolving({
        "hooks.partner.example": ["169.254.169.254"], "zero.partner.example": ["0.0.0.0"],
        "ok.partner.example": ["203.0.113.7"],
    }))
    policy = HostPolicy(["*.partner.example"])
    for host in ("hooks", "zero"):
        with pytest.raises(BlockedURL, match=r"link-local|unspecified"):
            policy.check(f"https://{host}.partner.example/")
    assert policy.check("https://ok.partner.example/").address == "203.0.113.7"
    assert HostPolicy(["*.partner.example", "169.254.0.0/16"]).check("https://hooks.partner.example/").address


# --- what post() does: one resolution, the checked address, no redirects ---------------------------------------

class Recorder:
    """A loopback HTTP server that records requests and answers with a fixed status and headers."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.requests: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                recorder.requests.append({"path": self.path, "host": self.headers.get("Host", "")})
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Callable[..., Recorder]]:
    started: list[Recorder] = []

    def start(status: int = 200, headers: dict[str, str] | None = None) -> Recorder:
        started.append(Recorder(status, headers))
        return started[-1]

    yield start
    for server in started:
        server.close()


def test_the_connection_goes_to_the_checked_address_with_one_resolution(
    monkeypatch: pytest.MonkeyPatch, recorder: Callable[..., Recorder]
) -> None:
    """A second lookup could be answered differently (DNS rebinding); post() makes none."""
    target = recorder()
    calls: list[str] = []
    answers = iter([["127.0.0.1"], ["10.0.0.5"], ["10.0.0.5"]])

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        table = {} if host == "127.0.0.1" else {host: next(answers)}
        return resolving(table, calls)(host, port, *args, **kwargs)

    monkeypatch.setattr(outbound.socket, "getaddrinfo", rebinding)
    result = post(LOOPBACK_ONLY, f"http://hooks.example.test:{target.port}/cb", b"{}", {}, timeout=5)
    assert result.status == 200
    assert calls == ["hooks.example.test"]
    assert target.requests == [{"path": "/cb", "host": f"hooks.example.test:{target.port}"}]


def test_post_never_follows_a_redirect(recorder: Callable[..., Recorder]) -> None:
    inner = recorder()
    for status in (301, 302, 303, 307, 308):
        outer = recorder(status, {"Location": f"http://127.0.0.1:{inner.port}/internal-admin"})
        result = post(LOOPBACK_ONLY, f"http://127.0.0.1:{outer.port}/cb", b"{}", {}, timeout=5)
        assert result.status == status
    assert inner.requests == []


def test_the_media_fetcher_checks_every_redirect_hop(recorder: Callable[..., Recorder]) -> None:
    """Attachments follow provider redirects (Twilio media); each hop must pass the allow-list again."""
    for location in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::ffff:10.0.0.1]/"):
        hop = recorder(302, {"Location": location})
        with pytest.raises(FetchError, match="not allowed"):
            Fetcher(LOOPBACK_ONLY, timeout=5).get(f"http://127.0.0.1:{hop.port}/media", 1000)


# --- the edge refuses such URLs when they arrive ---------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/hook",
                                 "http://[::ffff:192.168.0.1]/", "http://2130706433:9/hook", "http://localhost:9/"])
def test_the_edge_refuses_private_reply_attachment_and_helper_urls(client: FlaskClient, url: str,
                                                                     make_app: Any) -> None:
    strict = keyed(make_app(allowed_hosts="10.99.0.0/16").test_client())
    loopback = "2130706433" in url or "localhost" in url
    for edge in (strict,) if loopback else (client, strict):
        reply = edge.post("/v1/messages", json={"user": "eve", "text": "hi", "reply_url": url})
        assert reply.status_code == 400 and "reply_url" in reply.get_json()["fields"]
        attachment = edge.post("/v1/messages", json={"user": "eve", "text": "hi",
                                                     "attachments": [{"url": url, "mime": "text/plain"}]})
        assert attachment.status_code == 400 and "attachments" in attachment.get_json()["fields"]
        manifest = {"name": "evil", "url": url, "version": "1", "capabilities": [
            {"name": "x", "description": "x", "input_schema": {"type": "object"}, "output_schema": {"type": "object"}}]}
        helper = edge.post("/v1/helpers", json=manifest,
                           headers={"Authorization": f"Bearer {providers.REGISTRATION_TOKEN}"})
        assert helper.status_code == 400 and "url" in helper.get_json()["fields"]
