"""A local stand-in for the Slack Web API (real HTTP), and a signer for Events API requests.

``FakeSlack`` serves ``POST /api/chat.postMessage`` and ``/api/chat.update`` as
Slack does (Bearer token, JSON or form body, ``{"ok": …}`` answers; ``ok: false``
errors come with HTTP 200, rate limits with 429 and ``Retry-After``);
``fail_next`` scripts a failure.  Posted messages are kept by ``ts`` so an update
of an unknown one fails with ``message_not_found``; ``shown(channel)`` is what the
channel shows now and ``calls`` every successful call with its arrival time.
The real ``slack_sdk`` ``WebClient`` is pointed at ``url``.
``SlackEvents`` signs event bodies with the signing secret exactly as Slack does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import requests

BOT_TOKEN = "xoxb-test-0000"
SIGNING_SECRET = "0123456789abcdef0123456789abcdef"
TEAM = "T0TEST"
BOT_USER = "U0BOT"


class FakeSlack:
    def __init__(self, token: str = BOT_TOKEN) -> None:
        self.token = token
        self.posts: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any], float]] = []  # (method, args, time.time())
        self.messages: dict[tuple[str, str], str] = {}  # (channel, ts) -> current text
        self.attempts = 0
        self._failures: deque[tuple[int, str]] = deque()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._json(200, {"ok": False, "error": "invalid_auth"})
                    return
                method = self.path.rstrip("/").removeprefix("/api/")
                if method not in ("chat.postMessage", "chat.update"):
                    self._json(200, {"ok": False, "error": "unknown_method"})
                    return
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    args = json.loads(raw or b"{}")
                else:
                    args = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                status, body = fake._post(args) if method == "chat.postMessage" else fake._update(args)
                self._json(status, body)

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail_next(self, status: int, error: str) -> None:
        with self._lock:
            self._failures.append((status, error))

    def _post(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.attempts += 1
            if self._failures:
                status, error = self._failures.popleft()
                return status, {"ok": False, "error": error}
            if not args.get("channel"):
                return 200, {"ok": False, "error": "channel_not_found"}
            self.posts.append(args)
            ts = f"{time.time():.6f}"
            while (args["channel"], ts) in self.messages:  # two posts in one microsecond
                ts = f"{float(ts) + 0.000001:.6f}"
            self.messages[(args["channel"], ts)] = str(args.get("text"))
            self.calls.append(("chat.postMessage", args, time.time()))
        return 200, {"ok": True, "channel": args["channel"], "ts": ts, "message": {"text": args.get("text")}}

    def _update(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.attempts += 1
            if self._failures:
                status, error = self._failures.popleft()
                return status, {"ok": False, "error": error}
            key = (str(args.get("channel")), str(args.get("ts")))
            if key not in self.messages:
                return 200, {"ok": False, "error": "message_not_found"}
            self.messages[key] = str(args.get("text"))
            self.updates.append(args)
            self.calls.append(("chat.update", args, time.time()))
        return 200, {"ok": True, "channel": key[0], "ts": key[1], "text": args.get("text")}

    def shown(self, channel: str) -> list[str]:
        """The texts the channel shows now, oldest message first."""
        with self._lock:
            return [text for (chan, _), text in sorted(self.messages.items(), key=lambda kv: float(kv[0][1]))
                    if chan == channel]

    def in_channel(self, channel: str) -> list[dict[str, Any]]:
        return [p for p in list(self.posts) if p["channel"] == channel]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SlackEvents:
    """POSTs Events API requests to the edge, signed like Slack's."""

    def __init__(self, base_url: str, secret: str = SIGNING_SECRET) -> None:
        self.url = f"{base_url}/v1/channels/slack/events"
        self.secret = secret

    def headers(self, body: str, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        digest = hmac.new((secret or self.secret).encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
        return {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": f"v0={digest}"}

    def post(self, payload: dict[str, Any], *, retry: int = 0, timestamp: int | None = None,
             secret: str | None = None) -> requests.Response:
        body = json.dumps(payload)
        headers = self.headers(body, timestamp, secret)
        if retry:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_error"}
        return requests.post(self.url, data=body, headers=headers, timeout=10)

    @staticmethod
    def mention(text: str, *, event_id: str, channel: str, ts: str, thread_ts: str | None = None) -> dict[str, Any]:
        event = {"type": "app_mention", "user": "U0ALICE", "text": f"<@{BOT_USER}> {text}", "ts": ts,
                 "channel": channel, **({"thread_ts": thread_ts} if thread_ts else {})}
        return {"type": "event_callback", "team_id": TEAM, "event_id": event_id, "event_time": int(time.time()),
                "event": event, "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}]}

    @staticmethod
    def direct(text: str, *, event_id: str, channel: str, ts: str) -> dict[str, Any]:
        event = {"type": "message", "channel_type": "im", "user": "U0ALICE", "text": text, "ts": ts, "channel": channel}
        return {"type": "event_callback", "team_id": TEAM, "event_id": event_id, "event_time": int(time.time()),
                "event": event, "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}]}
