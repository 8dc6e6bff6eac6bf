"""A local stand-in for the Telegram Bot API (real HTTP): the channel's own client is pointed at ``url``.

Serves ``POST /bot<token>/<method>`` (JSON bodies, ``{"ok": true, "result": …}``
answers) for sendMessage, editMessageText, sendChatAction, getMe, getFile, setWebhook and
getWebhookInfo, and ``GET /file/bot<token>/<path>`` for file downloads.
Every call is recorded (with the time it arrived); ``fail_next("sendMessage", 429, retry_after=1)``
scripts a failure the way Telegram reports it.  A wrong token gets 401.  Sent
messages are kept as Telegram keeps them, so ``editMessageText`` answers like the
real one: 400 "message to edit not found" for an unknown id and "message is not
modified" for the same text; ``shown(chat)`` is what the chat shows now.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "123456:TEST-token_abcdefghijklmnopqrstuvw"
BOT_USERNAME = "switchboard_test_bot"
WEBHOOK_SECRET = "webhook-secret_0123456789"


def telegram_env(fake: FakeTelegram) -> dict[str, str]:
    """The settings of a system whose Telegram channel talks to ``fake`` (no TELEGRAM_BOT_USERNAME: getMe)."""
    return {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "TELEGRAM_API_BASE_URL": fake.url, "TELEGRAM_API_TIMEOUT": "3"}


@dataclass(frozen=True)
class Call:
    method: str
    payload: dict[str, Any]
    at: float = 0.0  # time.time() of arrival


class FakeTelegram:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, bytes)
        self.webhook: dict[str, Any] = {}
        self.messages: dict[tuple[Any, int], str] = {}  # (chat_id, message_id) -> current text
        self._failures: dict[str, deque[tuple[int, str, int | None]]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.send_delay = 0.0  # seconds before answering each sendMessage (a slow Bot API)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                prefix = f"/bot{fake.token}/"
                if not self.path.startswith(prefix):
                    self._json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                    return
                method = self.path[len(prefix):]
                payload = json.loads(raw or b"{}")
                if method == "sendMessage" and fake.send_delay:
                    time.sleep(fake.send_delay)
                status, body = fake._answer(method, payload)
                self._json(status, body)

            def do_GET(self) -> None:
                prefix = f"/file/bot{fake.token}/"
                for file_path, data in fake.files.values():
                    if self.path == prefix + file_path:
                        self.send_response(200)
                        self.send_header("Content-Type", "application/octet-stream")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                self._json(404, {"ok": False, "error_code": 404, "description": "Not Found"})

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail_next(self, method: str, status: int, description: str = "scripted failure",
                  retry_after: int | None = None) -> None:
        with self._lock:
            self._failures[method].append((status, description, retry_after))

    def add_file(self, file_id: str, file_path: str, data: bytes) -> None:
        self.files[file_id] = (file_path, data)

    def _answer(self, method: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if self._failures[method]:
                status, description, retry_after = self._failures[method].popleft()
                body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
                if retry_after is not None:
                    body["parameters"] = {"retry_after": retry_after}
                self.calls.append(Call(f"{method}!failed", payload, time.time()))
                return status, body
            self.calls.append(Call(method, payload, time.time()))
            sent = sum(1 for c in self.calls if c.method == "sendMessage")
            if method == "sendMessage":
                if not isinstance(payload.get("text"), str) or not 1 <= len(payload["text"]) <= 4096:
                    return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
                self.messages[(payload["chat_id"], 1000 + sent)] = payload["text"]
                return 200, {"ok": True, "result": {"message_id": 1000 + sent, "chat": {"id": payload["chat_id"]},
                                                    "text": payload["text"]}}
            if method == "editMessageText":
                return self._edit(payload)
        if method == "getMe":
            return 200, {"ok": True, "result": {"id": 1, "is_bot": True, "username": BOT_USERNAME}}
        if method == "getFile":
            found = self.files.get(str(payload.get("file_id")))
            if found is None:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
            return 200, {"ok": True, "result": {"file_id": payload["file_id"], "file_path": found[0],
                                                "file_size": len(found[1])}}
        if method == "setWebhook":
            self.webhook = payload
            return 200, {"ok": True, "result": True, "description": "Webhook was set"}
        if method == "getWebhookInfo":
            return 200, {"ok": True, "result": {"url": self.webhook.get("url", ""), "pending_update_count": 0}}
        return 200, {"ok": True, "result": True}

    def _edit(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = (payload.get("chat_id"), payload.get("message_id"))
        text = payload.get("text")
        if key not in self.messages:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message to edit not found"}
        if not isinstance(text, str) or not 1 <= len(text) <= 4096:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
        if self.messages[key] == text:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is not modified: "
                         "specified new message content and reply markup are exactly the same"}
        self.messages[key] = text
        return 200, {"ok": True, "result": {"message_id": key[1], "chat": {"id": key[0]}, "text": text}}

    def edits(self, chat_id: int) -> list[Call]:
        return [c for c in list(self.calls) if c.method == "editMessageText" and c.payload["chat_id"] == chat_id]

    def shown(self, chat_id: int) -> list[str]:
        """The texts the chat shows now, oldest message first."""
        with self._lock:
            return [text for (chat, _), text in sorted(self.messages.items(), key=lambda kv: kv[0][1])
                    if chat == chat_id]

    def sent(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        return [c.payload for c in list(self.calls)
                if c.method == "sendMessage" and (chat_id is None or c.payload.get("chat_id") == chat_id)]

    def actions(self, chat_id: int) -> list[dict[str, Any]]:
        return [c.payload for c in list(self.calls) if c.method == "sendChatAction" and c.payload["chat_id"] == chat_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
