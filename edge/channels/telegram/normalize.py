"""Telegram updates as Envelopes: pure functions, no I/O.

Private chats are always answered; in groups only messages that mention the bot,
address a command to it or reply to it.  A group is one conversation
(``telegram:<chat_id>``, a forum topic ``telegram:<chat_id>:<topic>``): everyone
in it talks to the same assistant, as in a Slack thread.  Voice notes, audio,
photos, videos and documents become attachments at the URL ``file_url`` gives
(the channel's signed file proxy, ``file_signature``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Any

from tasks.schemas import Attachment, Envelope, ReplyRoute

__all__ = ["CHANNEL", "CHANNEL_COMMANDS", "channel_command", "file_signature", "normalize"]

CHANNEL = "telegram"


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

