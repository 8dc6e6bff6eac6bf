"""A local stand-in for Twilio: its REST API (real HTTP) and its webhook side (signed requests, a caller).

``FakeTwilio`` serves ``POST /2010-04-01/Accounts/<sid>/Messages.json`` as
Twilio does (Basic auth, form body, a JSON message resource with a ``sid``),
records what was sent and can be scripted to fail: ``fail_next(503)``,
``fail_next(400, code=21211)``, or ``down = True`` to drop connections.
The real ``twilio`` client is pointed at ``url``.

``TwilioWebhooks`` signs webhooks exactly as Twilio does (``RequestValidator``)
and ``Caller`` plays a phone call: it follows ``<Redirect>``s, remembers
what was ``<Say>``-ed and answers ``<Gather>``s with speech.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import requests
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from tasks.settings import Settings

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token-0123456789abcdef"


@dataclass(frozen=True)
class SentMessage:
    sid: str
    to: str
    from_: str
    body: str


@dataclass(frozen=True)
class Failure:
    status: int
    code: int | None = None
    message: str = "scripted failure"


@dataclass
class FakeTwilio:
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    sent: list[SentMessage] = field(default_factory=list)
    attempts: int = 0  # every Messages.json request, failed ones included
    down: bool = False  # drop connections without answering (an outage the client sees as a network error)

    def __post_init__(self) -> None:
        self.media: dict[str, tuple[bytes, str]] = {}  # media sid -> (bytes, content type)
        self.media_requests: list[tuple[str, str]] = []  # (path, Authorization header)
        self._failures: deque[Failure] = deque()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if fake.down:
                    self.close_connection = True
                    return
                status, body = fake.handle(self.path, self.headers.get("Authorization", ""), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                """Media like Twilio serves it: behind basic auth, redirected to where it is stored."""
                fake.media_requests.append((self.path, self.headers.get("Authorization", "")))
                prefix, stored = f"/2010-04-01/Accounts/{fake.account_sid}/Messages/", "/media-store/"
                if self.path.startswith(prefix) and "/Media/" in self.path:
                    expected = "Basic " + base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        self._plain(401, b"", "text/plain")
                        return
                    self.send_response(307)
                    self.send_header("Location", stored + self.path.rsplit("/", 1)[-1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.startswith(stored) and self.path[len(stored):] in fake.media:
                    data, content_type = fake.media[self.path[len(stored):]]
                    self._plain(200, data, content_type)
                    return
                self._plain(404, b"", "text/plain")

            def _plain(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def fail_next(self, status: int, *, code: int | None = None, message: str = "scripted failure", times: int = 1
                  ) -> None:
        """The next ``times`` message requests fail with this status (and Twilio error code)."""
        with self._lock:
            self._failures.extend([Failure(status, code, message)] * times)

    def succeed_then_fail(self, successes: int, failure: Failure) -> None:
        """Let ``successes`` requests through, then fail one (a reply failing part-way through its parts)."""
        with self._lock:
            self._failures.extend([Failure(0)] * successes + [failure])

    def handle(self, path: str, authorization: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if authorization != expected:
            return 401, {"code": 20003, "message": "Authenticate", "more_info": "", "status": 401}
        if path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            return 404, {"code": 20404, "message": "The requested resource was not found", "status": 404}
        with self._lock:
            self.attempts += 1
            failure = self._failures.popleft() if self._failures else None
            if failure is not None and failure.status:
                return failure.status, {"code": failure.code, "message": failure.message, "status": failure.status,
                                        "more_info": f"https://www.twilio.com/docs/errors/{failure.code}"}
            form = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
            message = SentMessage("SM" + uuid.uuid4().hex, form.get("To", ""), form.get("From", ""),
                                  form.get("Body", ""))
            self.sent.append(message)
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        return 201, {
            "sid": message.sid, "account_sid": self.account_sid, "to": message.to, "from": message.from_,
            "body": message.body, "status": "queued", "direction": "outbound-api", "num_segments": "1",
            "num_media": "0", "date_created": now, "date_updated": now, "date_sent": None, "price": None,
            "error_code": None, "error_message": None, "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message.sid}.json",
        }

    def media_url(self, media_sid: str, data: bytes, content_type: str) -> str:
        """Serve ``data`` as an MMS media item and return its URL (as in a webhook's MediaUrlN)."""
        self.media[media_sid] = (data, content_type)
        return f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Messages/MM{media_sid}/Media/{media_sid}"

    def to(self, number: str) -> list[str]:
        """Bodies sent to ``number``, in order."""
        return [m.body for m in self.sent if m.to == number]

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()
            self._failures.clear()
            self.attempts, self.down = 0, False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class TwilioWebhooks:
    """POSTs webhooks to the edge signed like Twilio signs them: over ``public_base`` + path and the form."""

    auth_token: str
    public_base: str  # the URL Twilio is configured with (PUBLIC_BASE_URL)
    edge_base: str  # where the request really goes (differs behind a proxy)

    def post(self, url: str, params: dict[str, str], *, signature: str | None = "valid") -> requests.Response:
        """POST to a public URL (path and query included); ``signature=None`` sends none."""
        headers = {}
        if signature == "valid":
            headers["X-Twilio-Signature"] = RequestValidator(self.auth_token).compute_signature(url, params)
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        target = self.edge_base + url.removeprefix(self.public_base)
        return requests.post(target, data=params, headers=headers, timeout=20)

    def sms(self, sender: str, body: str, *, to: str = "+15550000000", sid: str | None = None,
            signature: str | None = "valid", **extra: str) -> requests.Response:
        params = {"MessageSid": sid or "SM" + uuid.uuid4().hex, "AccountSid": ACCOUNT_SID, "From": sender, "To": to,
                  "Body": body, "NumMedia": "0", **extra}
        return self.post(f"{self.public_base}/v1/channels/twilio/sms", params, signature=signature)


def parse_twiml(text: str) -> ET.Element:
    return ET.fromstring(text)


@dataclass
class Caller:
    """A person on a call, as Twilio's voice engine drives the webhooks."""

    hooks: TwilioWebhooks
    number: str
    to: str = "+15550000000"
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    heard: list[str] = field(default_factory=list)  # every <Say>, in order
    gather_url: str | None = None  # where the next speech goes; None once the call ended
    hung_up: bool = False
    redirects: int = 0
    max_request_seconds: float = 0.0  # the slowest webhook answer (Twilio gives up at 15 s)
    _after_gather: list[ET.Element] = field(default_factory=list)

    def _params(self, **extra: str) -> dict[str, str]:
        return {"CallSid": self.call_sid, "AccountSid": ACCOUNT_SID, "From": self.number, "To": self.to,
                "CallStatus": "in-progress", "Direction": "inbound", **extra}

    def _fetch(self, url: str, params: dict[str, str]) -> ET.Element:
        started = time.monotonic()
        response = self.hooks.post(url, params)
        self.max_request_seconds = max(self.max_request_seconds, time.monotonic() - started)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/xml")
        return parse_twiml(response.text)

    def _run(self, document: ET.Element | list[ET.Element], *, follow: bool) -> ET.Element | None:
        """Play verbs in order like Twilio; a <Redirect> is returned (or followed); a <Gather> stops here."""
        self.gather_url = None
        verbs = list(document)
        for index, verb in enumerate(verbs):
            if verb.tag == "Say":
                self.heard.append(verb.text or "")
            elif verb.tag == "Gather":
                self.heard.extend(say.text or "" for say in verb if say.tag == "Say")
                self.gather_url = verb.attrib["action"]
                self._after_gather = verbs[index + 1:]
                return None  # the caller speaks now (or stays silent: see ``silence``)
            elif verb.tag == "Redirect":
                if not follow:
                    return verb
                self.redirects += 1
                return self._run(self._fetch(verb.text or "", self._params()), follow=True)
            elif verb.tag == "Hangup":
                self.hung_up = True
                return None
        self.hung_up = True  # TwiML ran out: Twilio ends the call
        return None

    def dial(self) -> None:
        self._run(self._fetch(f"{self.hooks.public_base}/v1/channels/twilio/voice", self._params()), follow=True)

    def say(self, speech: str, *, follow: bool = True) -> ET.Element | None:
        """Speak into the pending <Gather>; with ``follow=False`` stop at the first <Redirect> (and return it)."""
        assert self.gather_url, "no <Gather> is listening"
        document = self._fetch(self.gather_url, self._params(SpeechResult=speech, Confidence="0.9"))
        return self._run(document, follow=follow)

    def follow(self, redirect: ET.Element, *, once: bool = False) -> ET.Element | None:
        self.redirects += 1
        document = self._fetch(redirect.text or "", self._params())
        return self._run(document, follow=not once)

    def silence(self) -> None:
        """No speech: Twilio runs the verbs after the <Gather>."""
        assert self.gather_url is not None
        self._run(self._after_gather, follow=True)


# --------------------------------------------------------------------------- the edge's Twilio webhooks in process
PUBLIC = "https://switchboard.example.com"  # what Twilio calls; the test client talks plain http to localhost


def twilio_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.replace(
        twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, public_base_url=PUBLIC, **changes
    )


def signed_post(client: FlaskClient, url: str, form: dict[str, str], token: str = AUTH_TOKEN) -> Any:
    signature = RequestValidator(token).compute_signature(url, form)
    return client.post(url.removeprefix(PUBLIC), data=form, headers={"X-Twilio-Signature": signature})
