"""Abuse through the real thing: gunicorn, the edge, a real Redis (no workers needed).

Rate limits with Retry-After, the limiter and intake while Redis is down,
SSRF refused end to end (``localhost`` and a decimal spelling when loopback
is not allowed), and requests too large for gunicorn or the edge.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from twilio.request_validator import RequestValidator

from tests.security import providers
from tests.support.factories import AUTH
from tests.support.harness import CallbackReceiver, RedisServer, System

pytestmark = pytest.mark.integration

MakeSystem = Callable[..., System]


def sms(system: System, sid: str, sender: str = "+15550001111") -> requests.Response:
    form = providers.sms_form(sid, sender)
    url = f"{system.base_url}/v1/channels/twilio/sms"
    signature = RequestValidator(providers.TWILIO_TOKEN).compute_signature(url, form)
    return requests.post(url, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)


def test_limits_answer_429_with_retry_after_and_count_in_redis(make_system: MakeSystem) -> None:
    system = make_system(RATE_LIMIT_USER="3/minute", RATE_LIMIT_SENDER="2/minute",
                         TWILIO_AUTH_TOKEN=providers.TWILIO_TOKEN, TWILIO_ACCOUNT_SID="AC1")
    system.start_edge()
    statuses = [system.post(user="mallory", text=f"hi {i}").status_code for i in range(3)]
    refused = system.post(user="mallory", text="one more")
    assert statuses == [202, 202, 202]
    assert refused.status_code == 429 and refused.headers["Content-Type"] == "application/json"
    assert "this user" in refused.json()["error"] and 1 <= int(refused.headers["Retry-After"]) <= 61
    assert system.post(user="trent", text="hi").status_code == 202
    assert [sms(system, f"SM{i}").status_code for i in range(3)] == [200, 200, 429]
    assert sms(system, "SMx", sender="+15550002222").status_code == 200


def test_while_redis_is_down_intake_answers_503_and_the_limiter_lets_it_through(
    make_system: MakeSystem, tmp_path: Path
) -> None:
    """Fail-open: the limiter cannot count, intake cannot queue, so the answer is intake's 503, never a 429/500."""
    own = RedisServer(tmp_path / "redis")
    try:
        system = make_system(redis_url=own.url, RATE_LIMIT_USER="2/minute")
        system.start_edge()
        assert system.post(user="alice", text="before").status_code == 202
        own.stop()
        for _ in range(4):  # over the limit too: nothing can be counted, nothing is queued
            down = system.post(user="alice", text="while down")
            assert down.status_code == 503, down.text
            assert "error" in down.json() and down.headers["Retry-After"] == "5"
        assert requests.get(f"{system.base_url}/readyz", timeout=10).status_code == 503
        own.restart()
        statuses = [system.post(user="alice", text="after").status_code for _ in range(3)]
        assert statuses[0] == 202 and 429 in statuses  # counting again
    finally:
        own.stop()


def test_ssrf_through_the_running_edge(make_system: MakeSystem, callbacks: CallbackReceiver) -> None:
    """Loopback not allowed: a real listener on 127.0.0.1 cannot be reached by any spelling of it."""
    token = "reg-token"
    system = make_system(SWITCHBOARD_ALLOWED_HOSTS="10.99.0.0/16", HELPER_REGISTRATION_TOKEN=token)
    system.start_edge()
    port = callbacks.url.split(":")[2].split("/")[0]
    for host in ("localhost", "127.0.0.1", "2130706433", "0x7f.0.0.1", "[::ffff:127.0.0.1]", "169.254.169.254"):
        url = f"http://{host}:{port}/callback"
        response = system.post(user="eve", text="hi", reply_url=url)
        assert response.status_code == 400 and "reply_url" in response.json()["fields"], (host, response.text)
        manifest = {"name": "sneaky", "url": url, "version": "1", "capabilities": [
            {"name": "x", "description": "x", "input_schema": {"type": "object"}, "output_schema": {"type": "object"}}]}
        registered = requests.post(f"{system.base_url}/v1/helpers", json=manifest, timeout=10,
                                   headers={"Authorization": f"Bearer {token}"})
        assert registered.status_code == 400 and "url" in registered.json()["fields"]
    assert callbacks.received == [] and callbacks.rejected == 0


def raw_request(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes as they are (requests would refuse most of these) and read the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_requests_too_large_for_gunicorn_or_the_edge_are_refused_not_500(make_system: MakeSystem) -> None:
    system = make_system(MAX_BODY_BYTES="65536")
    system.start_edge()
    base = system.base_url
    huge_header = requests.post(f"{base}/v1/messages", json={"user": "a", "text": "x"}, timeout=10,
                                headers={**AUTH, "X-Junk": "j" * 20_000})
    many_headers = requests.post(f"{base}/v1/messages", json={"user": "a", "text": "x"}, timeout=10,
                                 headers={**AUTH, **{f"X-H{i}": "v" for i in range(200)}})
    long_url = requests.get(f"{base}/v1/messages/{'a' * 10_000}", headers=AUTH, timeout=10)
    for response in (huge_header, many_headers, long_url):  # gunicorn's own limits answer these, in plain text
        assert 400 <= response.status_code < 500, response.status_code
    too_big = requests.post(f"{base}/v1/messages", data=b'{"text": "' + b"x" * 100_000 + b'"}', timeout=10,
                            headers={**AUTH, "Content-Type": "application/json"})
    assert too_big.status_code == 413 and too_big.json()["error"] == "request body is too large"

    def chunks() -> Iterator[bytes]:
        yield b'{"user": "a", "text": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    chunked = requests.post(f"{base}/v1/messages", data=chunks(), timeout=10,  # no Content-Length to check
                            headers={**AUTH, "Content-Type": "application/json"})
    assert chunked.status_code == 413 and "error" in chunked.json()
    form = urlencode({"user": "a", "text": "x"}).encode()
    status, _ = raw_request(system.port, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                         b"Content-Length: abc\r\n\r\n", form)
    assert 400 <= status < 500
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200  # still serving
