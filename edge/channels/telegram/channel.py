"""Telegram: ``POST /v1/channels/telegram`` (Bot API webhook) in, ``sendMessage`` out.

The webhook checks ``X-Telegram-Bot-Api-Secret-Token`` before reading anything
(constant-time compare; no secret configured → 403), turns the update into an
Envelope with the pure ``normalize`` and queues it with ``update_id`` as the
delivery id, so Telegram's redeliveries are dropped.  Private chats are always
answered; in groups only messages that mention the bot, address a command to it
or reply to it.  A group is one conversation (``telegram:<chat_id>``, a forum
topic ``telegram:<chat_id>:<topic>``): everyone in it talks to the same
assistant, as in a Slack thread.

Voice notes, audio, photos, videos and documents become attachments whose URL is
this edge's ``/v1/channels/telegram/files/<file_id>?sig=…``: the edge resolves it
with ``getFile`` and streams the bytes, so the bot token never leaves the edge
(Telegram's own file URLs contain it) and nothing slows the webhook.

Replies are plain text (no ``parse_mode``: a model's stray ``*`` or ``_`` would
make a Markdown send fail), split below 4096 characters at paragraph, sentence
or word boundaries; each sent part is recorded in Redis, so a retry after part 2
of 3 failed does not repeat part 1.  While the model works the chat shows
"typing…" (best effort, from a background thread; never fails the webhook).
With ``TELEGRAM_STREAM_INTERVAL`` > 0 the reply is shown while it is written:
the first partial is a ``sendMessage``, later ones ``editMessageText`` it (at most
one edit per interval), and the final reply edits that message into its first
part (``edge/channels/partials.py``).

The Bot API is called with plain ``requests``: it is JSON over HTTPS, the edge
is synchronous (gunicorn threads), and python-telegram-bot would bring an
asyncio application and an httpx stack for two endpoints.

``python -m edge.channels.telegram set-webhook`` registers the webhook (with
the secret) with Telegram; ``… info`` shows what Telegram has.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import mimetypes
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests
from flask import Blueprint, Response, jsonify, request, stream_with_context
from flask.typing import ResponseReturnValue

from edge.channels.base import CallbackReply, Channel, PermanentSendError, TemporarySendError
from edge.channels.partials import PartialBackoff, PartialBusy, PartialUpdate, ShownReplies, partial_text
from edge.channels.splitting import split_text
from edge.context import EdgeContext
from edge.errors import BadRequest, Forbidden, NotFound, Unavailable
from redis_stores.messages import TERMINAL
from tasks.schemas import Attachment, Envelope, ReplyRoute, new_message_id
from tasks.settings import Settings, load_settings

__all__ = ["CHANNEL", "MAX_MESSAGE_CHARS", "BotAPI", "Telegram", "TelegramError", "normalize"]

log = logging.getLogger(__name__)

CHANNEL = "telegram"
ROUTE = "/v1/channels/telegram"
MAX_MESSAGE_CHARS = 4096
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
EMPTY_REPLY = "Sorry, I have no answer to that."
TYPING_EVERY = 4.5  # Telegram shows a chat action for 5 s or until the next message
_SECRET_FORM = re.compile(r"^[A-Za-z0-9_-]{1,256}\Z")


# --- pure parts ------------------------------------------------------------------

def file_signature(secret: str, file_id: str) -> str:
    """HMAC of a file id: a file URL handed to converters cannot be turned to other files."""
    return hmac.new(secret.encode(), f"telegram-file:{file_id}".encode(), hashlib.sha256).hexdigest()[:32]


def _attachments(message: Mapping[str, Any], file_url: Callable[[str], str]) -> tuple[Attachment, ...]:
    found: list[tuple[Mapping[str, Any], str, str]] = []  # (file object, default mime, default name)
    if message.get("photo"):
        found.append((message["photo"][-1], "image/jpeg", "photo.jpg"))  # the largest size comes last
    for kind, mime, name in (
        ("voice", "audio/ogg", "voice.ogg"),
        ("audio", "audio/mpeg", "audio.mp3"),
        ("video", "video/mp4", "video.mp4"),
        ("video_note", "video/mp4", "video_note.mp4"),
        ("document", "application/octet-stream", "document"),
    ):
        if isinstance(message.get(kind), Mapping):
            found.append((message[kind], mime, name))
    attachments = []
    for item, default_mime, default_name in found:
        file_id = item.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            continue
        mime = str(item.get("mime_type") or default_mime).lower()
        if not re.match(r"^[\w.+-]+/[\w.+-]+\Z", mime):
            mime = default_mime
        name = str(item.get("file_name") or default_name)[:255]
        size = int(item.get("file_size") or 0)
        attachments.append(Attachment(mime=mime, size=size, name=name, url=file_url(file_id)))
    return tuple(attachments)


def _mention(bot_username: str) -> re.Pattern[str] | None:
    """``@bot`` as a word, or as the target of a leading command (``/ask@bot``: group 1 keeps the command)."""
    name = re.escape(bot_username.lstrip("@"))
    return re.compile(rf"^(/\w+)@{name}\b|(?<![\w@/])@{name}\b", re.IGNORECASE) if name else None


# Telegram's own commands (every client offers /start when a chat opens, /help in its menu, and groups
# address the bot as /ask@bot): the channel's, so the core never takes them for helper commands.
# ``/start``'s argument is a deep link's payload, not words of the person: kept in the metadata only.
CHANNEL_COMMANDS = {"start": "Hello!", "help": "What can you do?", "ask": "What can you do?"}
_CHANNEL_COMMAND = re.compile(r"/(start|help|ask)(?![\w.])\s*(.*)", re.S | re.I)


def channel_command(text: str) -> tuple[str, dict[str, str]]:
    """(the text the core gets, metadata naming the command) for a leading Telegram command (``@bot`` already
    taken off); other text as it is. ``/ask <question>`` and ``/help <question>`` leave the question."""
    match = _CHANNEL_COMMAND.fullmatch(text)
    if not match:
        return text, {}
    command, rest = match.group(1).lower(), match.group(2).strip()
    if command == "start":
        return CHANNEL_COMMANDS["start"], {"command": "start", **({"start_payload": rest[:64]} if rest else {})}
    return rest or CHANNEL_COMMANDS[command], {"command": command}


def normalize(
    update: Mapping[str, Any], *, message_id: str, callback_url: str | None, bot_username: str,
    file_url: Callable[[str], str], stream_interval: float = 0.0,
) -> Envelope | None:
    """An update as an Envelope, or None when it is not for the bot (pure: no I/O).

    None for edits, channel posts, service messages, stickers and group messages
    that do not address the bot.
    """
    message = update.get("message")
    if not isinstance(message, Mapping):
        return None
    chat = message.get("chat")
    if not isinstance(chat, Mapping) or "id" not in chat:
        return None
    raw_from = message.get("from")
    sender: Mapping[str, Any] = raw_from if isinstance(raw_from, Mapping) else {}
    if sender.get("is_bot"):
        return None
    text = str(message.get("text") or message.get("caption") or "")
    chat_type = chat.get("type")
    mention = _mention(bot_username)
    if chat_type in ("group", "supergroup"):
        replied = message.get("reply_to_message")
        replied_from = (replied.get("from") or {}) if isinstance(replied, Mapping) else {}
        to_bot = bool(mention and mention.search(text)) or bool(
            bot_username and str(replied_from.get("username", "")).lower() == bot_username.lstrip("@").lower()
        )
        if not to_bot:
            return None
    elif chat_type != "private":
        return None
    if mention:
        text = mention.sub(lambda m: m.group(1) or "", text)
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    text, command = channel_command(text)
    attachments = _attachments(message, file_url)
    if not text and not attachments:
        return None
    chat_id = chat["id"]
    session = f"{CHANNEL}:{chat_id}"
    context: dict[str, Any] = {"chat_id": chat_id}
    if message.get("is_topic_message") and message.get("message_thread_id"):
        session += f":{message['message_thread_id']}"
        context["thread_id"] = message["message_thread_id"]
    if chat_type != "private" and message.get("message_id"):
        context["reply_to"] = message["message_id"]  # in a group, answer the message that asked
    metadata = {
        "provider": "telegram", "chat_type": chat_type, "update_id": update.get("update_id"),
        **{k: sender[k] for k in ("username", "first_name", "language_code") if sender.get(k)},
        **command,
    }
    return Envelope(
        message_id=message_id,
        channel=CHANNEL,
        channel_message_id=str(update.get("update_id")),
        sender=str(sender.get("id") or chat_id),
        session_id=session,
        text=text,
        attachments=attachments,
        metadata=metadata,
        reply=ReplyRoute(callback_url=callback_url, context=context, stream_interval=stream_interval),
    )


# --- the Bot API -----------------------------------------------------------------


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


# --- the channel -----------------------------------------------------------------


class Telegram(Channel):
    name = CHANNEL

    def __init__(self, ctx: EdgeContext) -> None:
        super().__init__(ctx)
        settings = ctx.settings
        self.api = BotAPI(settings.telegram_api_base_url, settings.telegram_bot_token, settings.telegram_api_timeout)
        self._username = settings.telegram_bot_username.lstrip("@")
        self._typing_slots = threading.BoundedSemaphore(32)  # at most this many "typing…" loops at once
        self.shown = ShownReplies(ctx.redis, ctx.keys.prefix, CHANNEL, ttl=settings.idempotency_ttl_seconds,
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
        if not self.ctx.settings.telegram_bot_token:
            raise PermanentSendError("Telegram channel not configured (TELEGRAM_BOT_TOKEN)")
        chat_id = reply.context.get("chat_id")
        if chat_id is None:
            raise PermanentSendError("the reply names no chat_id")
        parts = split_text(reply.text or EMPTY_REPLY, MAX_MESSAGE_CHARS) or [EMPTY_REPLY]
        shown = self._take_over_partial(reply.message_id)
        for index, text in enumerate(parts):
            sent_key = f"{self.ctx.keys.prefix}:telegram:sent:{reply.message_id}:{index}"
            if self.ctx.redis.exists(sent_key):
                continue
            if index == 0 and shown and self._edit_final(chat_id, shown, text):
                message_id: Any = shown
            else:
                message_id = self._send_message(reply.context, text, first=index == 0)
            self.ctx.redis.set(sent_key, str(message_id), ex=self.ctx.settings.idempotency_ttl_seconds)

    def _send_message(self, context: Mapping[str, Any], text: str, *, first: bool) -> Any:
        """sendMessage; its message_id."""
        try:
            result = self.api.call("sendMessage", _message_payload(context, text, first=first))
        except TelegramError as exc:
            if exc.temporary:
                raise TemporarySendError(str(exc)) from None
            raise PermanentSendError(str(exc)) from None
        return result.get("message_id", "") if isinstance(result, dict) else ""

    # --- a reply shown while it is written --------------------------------------------
    def send_partial(self, update: PartialUpdate) -> str:
        """First partial: sendMessage; later ones: editMessageText of it (partials.py orders them)."""
        if self.ctx.settings.telegram_stream_interval <= 0 or update.context.get("chat_id") is None:
            return "ignored: streaming is off or the update names no chat"
        text = partial_text(update.text, MAX_MESSAGE_CHARS)

        def post() -> str:
            result = self._partial_call(lambda: self.api.call(
                "sendMessage", _message_payload(update.context, text, first=True)))
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

    def _take_over_partial(self, message_id: str) -> str | None:
        """The message showing this reply's partial text (no partial can follow now), if any."""
        if self.ctx.settings.telegram_stream_interval <= 0:
            return None
        try:
            return self.shown.finalize(message_id, self.ctx.settings.telegram_api_timeout + 1)
        except PartialBusy as exc:
            raise TemporarySendError(str(exc)) from None

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


def _message_payload(context: Mapping[str, Any], text: str, *, first: bool) -> dict[str, Any]:
    """sendMessage's body: plain text (no parse_mode, nothing to escape) in the reply's chat and topic;
    in a group the first part answers the message that asked."""
    payload: dict[str, Any] = {"chat_id": context["chat_id"], "text": text}
    if context.get("thread_id"):
        payload["message_thread_id"] = context["thread_id"]
    if first and context.get("reply_to"):
        payload["reply_parameters"] = {"message_id": context["reply_to"], "allow_sending_without_reply": True}
    return payload


# --- command line ------------------------------------------------------------------


def set_webhook(settings: Settings, url: str | None = None, *, drop_pending: bool = False) -> str:
    """Register ``<PUBLIC_BASE_URL>/v1/channels/telegram`` (or ``url``) with its secret token."""
    if not settings.telegram_bot_token:
        raise SystemExit("TELEGRAM_BOT_TOKEN is not set")
    if not _SECRET_FORM.match(settings.telegram_webhook_secret):
        raise SystemExit("TELEGRAM_WEBHOOK_SECRET must be 1-256 of A-Z a-z 0-9 _ - (e.g. `openssl rand -hex 32`)")
    target = url or f"{settings.public_base_url.rstrip('/')}{ROUTE}"
    api = BotAPI(settings.telegram_api_base_url, settings.telegram_bot_token, settings.telegram_api_timeout)
    api.call("setWebhook", {"url": target, "secret_token": settings.telegram_webhook_secret,
                            "allowed_updates": ["message"], "drop_pending_updates": drop_pending})
    return target


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.channels.telegram", description="Telegram webhook setup")
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("set-webhook", help="register this edge's webhook and secret with Telegram")
    setup.add_argument("--url", help="webhook URL (default: PUBLIC_BASE_URL + /v1/channels/telegram)")
    setup.add_argument("--drop-pending", action="store_true", help="discard updates Telegram still holds")
    commands.add_parser("info", help="show getWebhookInfo")
    args = parser.parse_args(argv)
    settings = settings or load_settings()
    try:
        if args.command == "set-webhook":
            print(f"webhook set: {set_webhook(settings, args.url, drop_pending=args.drop_pending)}")
        else:
            api = BotAPI(settings.telegram_api_base_url, settings.telegram_bot_token, settings.telegram_api_timeout)
            print(api.call("getWebhookInfo"))
    except TelegramError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
