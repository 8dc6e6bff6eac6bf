"""Telegram: ``POST /v1/channels/telegram`` (Bot API webhook) in, ``sendMessage`` out.

The webhook checks ``X-Telegram-Bot-Api-Secret-Token`` before reading anything
(constant-time compare; no secret configured → 403), turns the update into an
Envelope with the pure ``normalize`` (normalize.py) and queues it with
``update_id`` as the delivery id, so Telegram's redeliveries are dropped.

Attachments' URL is this edge's ``/v1/channels/telegram/files/<file_id>?sig=…``:
the edge resolves it with ``getFile`` and streams the bytes, so the bot token
never leaves the edge (Telegram's own file URLs contain it) and nothing slows
the webhook.

Replies are plain text (no ``parse_mode``: a model's stray ``*`` or ``_`` would
make a Markdown send fail), split below 4096 characters at paragraph, sentence
or word boundaries; each sent part is recorded in Redis, so a retry after part 2
of 3 failed does not repeat part 1 (``Channel.send_parts``).  While the model
works the chat shows "typing…" (best effort, from a background thread; never
fails the webhook).  With ``TELEGRAM_STREAM_INTERVAL`` > 0 the reply is shown
while it is written: the first partial is a ``sendMessage``, later ones
``editMessageText`` it (at most one edit per interval), and the final reply
edits that message into its first part (``edge/channels/partials.py``).

The Bot API client is bot_api.py; ``python -m edge.channels.telegram set-webhook``
(cli.py) registers the webhook with its secret.
"""

from __future__ import annotations

import hmac
import logging
import mimetypes
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request, stream_with_context
from flask.typing import ResponseReturnValue

from edge.channels.base import CallbackReply, Channel, PermanentSendError, TemporarySendError
from edge.channels.partials import PartialBackoff, PartialUpdate, ShownReplies, partial_text
from edge.channels.splitting import split_text
from edge.channels.telegram.bot_api import BotAPI, TelegramError, message_payload
from edge.channels.telegram.normalize import CHANNEL, file_signature, normalize
from edge.context import EdgeContext
from edge.errors import BadRequest, Forbidden, NotFound, Unavailable
from redis_stores.messages import TERMINAL
from tasks.schemas import new_message_id

__all__ = ["EMPTY_REPLY", "MAX_MESSAGE_CHARS", "ROUTE", "SECRET_HEADER", "Telegram"]

log = logging.getLogger(__name__)

ROUTE = "/v1/channels/telegram"
MAX_MESSAGE_CHARS = 4096
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
EMPTY_REPLY = "Sorry, I have no answer to that."
TYPING_EVERY = 4.5  # Telegram shows a chat action for 5 s or until the next message


class Telegram(Channel):
    name = CHANNEL

    def __init__(self, ctx: EdgeContext) -> None:
        super().__init__(ctx)
        settings = ctx.settings
        self.api = BotAPI(settings.telegram_api_base_url, settings.telegram_bot_token, settings.telegram_api_timeout)
        self._username = settings.telegram_bot_username.lstrip("@")
        self._typing_slots = threading.BoundedSemaphore(32)  # at most this many "typing…" loops at once
        self.shown = ShownReplies(ctx.redis, ctx.keys, CHANNEL, ttl=settings.idempotency_ttl_seconds,
                                  lock_seconds=settings.telegram_api_timeout + 2)

    @property
    def configured(self) -> bool:
        return bool(self.ctx.settings.telegram_bot_token and self.ctx.settings.telegram_webhook_secret)

    def blueprint(self) -> Blueprint:
        blueprint = Blueprint("telegram", __name__)
        blueprint.add_url_rule(ROUTE, "webhook", self.webhook, methods=["POST"])
        blueprint.add_url_rule(f"{ROUTE}/files/<file_id>", "file", self.file, methods=["GET"])
        return blueprint

    # --- webhook ---------------------------------------------------------------
    def verify(self) -> None:
        """403 unless the secret token matches; before anything else of the request is read."""
        if not self.configured:
            raise Forbidden("Telegram channel not configured (TELEGRAM_BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET)")
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.ctx.settings.telegram_webhook_secret.encode()):
            raise Forbidden(f"{SECRET_HEADER} does not match")

    def webhook(self) -> ResponseReturnValue:
        self.verify()
        update = request.get_json(silent=True)
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            raise BadRequest("not a Telegram update (a JSON object with an integer update_id)")
        envelope = normalize(update, message_id=new_message_id(), callback_url=self.callback_url,
                             bot_username=self.bot_username(update), file_url=self.file_url,
                             stream_interval=self.ctx.settings.telegram_stream_interval)
        if envelope is None:
            return jsonify({}), 200
        accepted = self.accept(envelope, str(update["update_id"]))  # files are converted to text first
        if not accepted.duplicate:
            self.start_typing(envelope.reply.context, accepted.message_id)
        return jsonify({}), 200

    def bot_username(self, update: Mapping[str, Any]) -> str:
        """TELEGRAM_BOT_USERNAME, else asked once with getMe (only groups need it).

        Without it a group message's mention cannot be seen, and a 200 would drop the message for good
        (Telegram never redelivers a 2xx): so a failed getMe is a 503, and Telegram sends the update again."""
        message = update.get("message")
        chat = (message.get("chat") if isinstance(message, Mapping) else None) or {}
        if self._username or not isinstance(chat, Mapping) or chat.get("type") not in ("group", "supergroup"):
            return self._username
        try:
            username = self.api.call("getMe", timeout=3).get("username")
        except (TelegramError, AttributeError) as exc:
            log.warning("telegram: getMe failed (%s); set TELEGRAM_BOT_USERNAME", exc)
            raise Unavailable("the bot's username is not known yet (getMe failed; TELEGRAM_BOT_USERNAME "
                              "is not set): Telegram will deliver this update again") from exc
        if not username:
            raise Unavailable("getMe named no username; set TELEGRAM_BOT_USERNAME")
        self._username = str(username)
        return self._username

    def file_url(self, file_id: str) -> str:
        sig = file_signature(self.ctx.settings.switchboard_secret, file_id)
        return f"{self.ctx.settings.public_base_url.rstrip('/')}{ROUTE}/files/{quote(file_id, safe='')}?sig={sig}"

    # --- "typing…" -----------------------------------------------------------------
    def start_typing(self, context: Mapping[str, Any], message_id: str) -> None:
        if self.ctx.settings.telegram_typing_seconds <= 0 or not self._typing_slots.acquire(blocking=False):
            return
        thread = threading.Thread(target=self._keep_typing, args=(dict(context), message_id), daemon=True,
                                  name=f"telegram-typing-{message_id[:8]}")
        thread.start()

    def _keep_typing(self, context: dict[str, Any], message_id: str) -> None:
        """sendChatAction every few seconds until the message is answered (or the time is up)."""
        try:
            deadline = time.monotonic() + self.ctx.settings.telegram_typing_seconds
            payload = {"chat_id": context["chat_id"], "action": "typing",
                       **({"message_thread_id": context["thread_id"]} if context.get("thread_id") else {})}
            while time.monotonic() < deadline:
                try:
                    self.api.call("sendChatAction", payload, timeout=2)
                except TelegramError as exc:
                    log.info("telegram: typing action failed: %s", exc)
                    return
                time.sleep(TYPING_EVERY)
                record = self.ctx.messages.get(message_id)
                if record is None or record.status in TERMINAL:
                    return
        except Exception:  # best effort: never let this thread's failure show anywhere but the log
            log.exception("telegram: typing loop failed")
        finally:
            self._typing_slots.release()

    # --- files for converters ---------------------------------------------------------
    def file(self, file_id: str) -> ResponseReturnValue:
        """Stream a Telegram file, resolved with getFile; the URL's signature is its only key."""
        if not self.configured:
            raise Forbidden("Telegram channel not configured")
        expected = file_signature(self.ctx.settings.switchboard_secret, file_id)
        if not hmac.compare_digest(request.args.get("sig", "").encode(), expected.encode()):
            raise Forbidden("bad or missing file signature")
        try:
            info = self.api.call("getFile", {"file_id": file_id})
            upstream = self.api.file(str(info["file_path"]))
        except TelegramError as exc:
            if exc.temporary:
                raise Unavailable(f"Telegram file service unavailable: {exc.description}") from None
            raise NotFound(f"Telegram has no such file: {exc.description}") from None
        except (KeyError, TypeError):
            raise NotFound("Telegram returned no file_path (files over 20 MB cannot be fetched)") from None
        mime = mimetypes.guess_type(str(info["file_path"]))[0] or "application/octet-stream"

        def body() -> Any:
            with upstream:
                yield from upstream.iter_content(64 * 1024)

        headers = {"Content-Length": upstream.headers["Content-Length"]} if "Content-Length" in upstream.headers else {}
        return Response(stream_with_context(body()), mimetype=mime, headers=headers)

    # --- reply -------------------------------------------------------------------------
    def send(self, reply: CallbackReply) -> None:
        """sendMessage, part by part, each part at most once (a retry resumes where it failed)."""
        settings = self.ctx.settings
        if not settings.telegram_bot_token:
            raise PermanentSendError("Telegram channel not configured (TELEGRAM_BOT_TOKEN)")
        chat_id = reply.context.get("chat_id")
        if chat_id is None:
            raise PermanentSendError("the reply names no chat_id")
        parts = split_text(reply.text or EMPTY_REPLY, MAX_MESSAGE_CHARS) or [EMPTY_REPLY]
        shown = self.take_over_partial(self.shown, reply.message_id, enabled=settings.telegram_stream_interval > 0,
                                       wait_seconds=settings.telegram_api_timeout + 1)
        self.send_parts(reply.message_id, parts,
                        lambda text, index: self._send_message(reply.context, text, first=index == 0),
                        shown=shown, edit=lambda message, text: self._edit_final(chat_id, message, text))

    def _send_message(self, context: Mapping[str, Any], text: str, *, first: bool) -> str:
        """sendMessage; its message_id."""
        try:
            result = self.api.call("sendMessage", message_payload(context, text, first=first))
        except TelegramError as exc:
            if exc.temporary:
                raise TemporarySendError(str(exc)) from None
            raise PermanentSendError(str(exc)) from None
        return str(result.get("message_id", "") if isinstance(result, dict) else "")

    # --- a reply shown while it is written --------------------------------------------
    def send_partial(self, update: PartialUpdate) -> str:
        """First partial: sendMessage; later ones: editMessageText of it (partials.py orders them)."""
        if self.ctx.settings.telegram_stream_interval <= 0 or update.context.get("chat_id") is None:
            return "ignored: streaming is off or the update names no chat"
        text = partial_text(update.text, MAX_MESSAGE_CHARS)

        def post() -> str:
            result = self._partial_call(lambda: self.api.call(
                "sendMessage", message_payload(update.context, text, first=True)))
            return str(result["message_id"])

        def edit(shown: str) -> None:
            self._partial_call(lambda: self.api.call(
                "editMessageText", {"chat_id": update.context["chat_id"], "message_id": int(shown), "text": text}))

        return self.shown.show(update, post, edit)

    @staticmethod
    def _partial_call(call: Callable[[], Any]) -> Any:
        """A Bot API call for a partial: Telegram's 429 ``retry_after`` pauses the message's partials."""
        try:
            return call()
        except TelegramError as exc:
            if exc.status == 429:
                raise PartialBackoff(float(exc.retry_after or 1)) from None
            raise

    def _edit_final(self, chat_id: Any, shown: str, text: str) -> bool:
        """Turn the partial message into the reply's first part; False: it is gone, send a new one."""
        try:
            self.api.call("editMessageText", {"chat_id": chat_id, "message_id": int(shown), "text": text})
        except TelegramError as exc:
            if "message is not modified" in exc.description:
                return True  # a retry after the edit went through
            if exc.temporary:
                raise TemporarySendError(str(exc)) from None
            log.info("telegram: could not edit the partial message %s (%s); sending the reply anew", shown, exc)
            return False
        return True

