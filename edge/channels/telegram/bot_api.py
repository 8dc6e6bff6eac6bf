"""The Telegram Bot API client: JSON over HTTPS with plain ``requests``.

The edge is synchronous (gunicorn threads), and python-telegram-bot would bring
an asyncio application and an httpx stack for a handful of endpoints.  No error
text ever carries the bot token (it is part of every Bot API URL).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import requests

__all__ = ["BotAPI", "TelegramError", "message_payload"]


class TelegramError(Exception):
    """A Bot API call failed: ``status`` 0 when Telegram could not be reached."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(f"Telegram {status or 'unreachable'}: {description}")
        self.status, self.description, self.retry_after = status, description, retry_after

    @property
    def temporary(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500


class BotAPI:
    """``POST <base>/bot<token>/<method>`` with a JSON body; the result or a TelegramError."""

    def __init__(self, base_url: str, token: str, timeout: float) -> None:
        self.base_url, self.token, self.timeout = base_url.rstrip("/"), token, timeout
        self.http = requests.Session()

    def call(self, method: str, payload: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        try:
            response = self.http.post(f"{self.base_url}/bot{self.token}/{method}", json=payload or {},
                                      timeout=timeout or self.timeout)
        except requests.RequestException as exc:
            raise TelegramError(0, type(exc).__name__) from None  # the exception text would show the token
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code == 200 and body.get("ok"):
            return body.get("result")
        retry_after = (body.get("parameters") or {}).get("retry_after")
        raise TelegramError(response.status_code, str(body.get("description") or response.reason), retry_after)

    def file(self, file_path: str) -> requests.Response:
        """The file's bytes, streamed (``<base>/file/bot<token>/<file_path>``)."""
        try:
            response = self.http.get(f"{self.base_url}/file/bot{self.token}/{quote(file_path)}",
                                     timeout=self.timeout, stream=True)
        except requests.RequestException as exc:
            raise TelegramError(0, type(exc).__name__) from None
        if response.status_code != 200:
            response.close()
            raise TelegramError(response.status_code, "file download failed")
        return response



def message_payload(context: Mapping[str, Any], text: str, *, first: bool) -> dict[str, Any]:
    """sendMessage's body: plain text (no parse_mode, nothing to escape) in the reply's chat and topic;
    in a group the first part answers the message that asked."""
    payload: dict[str, Any] = {"chat_id": context["chat_id"], "text": text}
    if context.get("thread_id"):
        payload["message_thread_id"] = context["thread_id"]
    if first and context.get("reply_to"):
        payload["reply_parameters"] = {"message_id": context["reply_to"], "allow_sending_without_reply": True}
    return payload

