"""Twilio webhooks' forms as Envelopes, and texts fit for SMS or speech: pure functions, no I/O."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from typing import Literal

from edge.channels.splitting import clip, split_text
from edge.channels.twilio.common import caller_session, require
from tasks.schemas import Attachment, Envelope, ReplyRoute

__all__ = [
    "SMS_CHANNEL",
    "VOICE_CHANNEL",
    "is_goodbye",
    "keyword",
    "media_attachments",
    "normalize_sms",
    "normalize_voice",
    "split_message",
    "spoken",
]

SMS_CHANNEL = "twilio-sms"
VOICE_CHANNEL = "twilio-voice"
MAX_MEDIA = 10

# Twilio's (and the carriers') default keywords; the whole message must be the word.
OPT_OUT = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"})
OPT_IN = frozenset({"start", "unstop"})
HELP = frozenset({"help", "info"})
Keyword = Literal["stop", "start", "help"]

_MIME = re.compile(r"^[\w.+-]+/[\w.+-]+\Z")


def keyword(body: str, opt_out_type: str | None = None, *, opted_out: bool = False) -> Keyword | None:
    """STOP/START/HELP-style keywords; ``YES`` re-subscribes only someone who opted out."""
    if opt_out_type and opt_out_type.lower() in ("stop", "start", "help"):
        return opt_out_type.lower()  # type: ignore[return-value]  # Twilio's Advanced Opt-Out decided
    word = re.sub(r"[\s.!]+$", "", body.strip()).lower()
    if word in OPT_OUT:
        return "stop"
    if word in OPT_IN or (opted_out and word == "yes"):
        return "start"
    if word in HELP:
        return "help"
    return None


def media_attachments(form: Mapping[str, str]) -> tuple[Attachment, ...]:
    """``NumMedia``/``MediaUrlN``/``MediaContentTypeN`` as attachments fetched later by URL."""
    try:
        count = min(int(form.get("NumMedia") or 0), MAX_MEDIA)
    except ValueError:
        count = 0
    attachments = []
    for index in range(max(count, 0)):
        url = form.get(f"MediaUrl{index}")
        if not url:
            continue
        mime = (form.get(f"MediaContentType{index}") or "").split(";")[0].strip().lower()
        if not _MIME.match(mime):
            mime = "application/octet-stream"
        name = f"media{index}{mimetypes.guess_extension(mime) or ''}"
        attachments.append(Attachment(mime=mime, size=0, name=name, url=url))
    return tuple(attachments)


def normalize_sms(
    form: Mapping[str, str], *, message_id: str, callback_url: str | None, shared_session: bool = True
) -> Envelope:
    """A Twilio SMS/MMS webhook's form as an Envelope (pure: no I/O)."""
    message_sid, sender, to = require(form, "MessageSid", "From", "To")
    attachments = media_attachments(form)
    metadata: dict[str, object] = {"provider": "twilio", "kind": "mms" if attachments else "sms", "to": to}
    if form.get("FromCountry"):
        metadata["from_country"] = form["FromCountry"]
    return Envelope(
        message_id=message_id,
        channel=SMS_CHANNEL,
        channel_message_id=message_sid,
        sender=sender,
        session_id=caller_session(sender, channel=SMS_CHANNEL, shared=shared_session, fallback=sender),
        text=(form.get("Body") or "").strip(),
        attachments=attachments,
        metadata=metadata,
        reply=ReplyRoute(callback_url=callback_url, context={"to": sender, "from": to}),
    )


def split_message(text: str, limit: int, *, numbered: bool = True) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, numbered ``(1/3) `` if asked; deterministic."""
    text = text.strip()
    if len(text) <= limit:
        return [text]
    digits = 1
    while True:
        width = 2 * digits + 4 if numbered else 0  # "(12/12) "
        if limit - width < 20:
            return split_text(text, limit)  # too short to afford numbering
        parts = split_text(text, limit - width)
        if not numbered:
            return parts
        if len(str(len(parts))) <= digits:
            return [f"({i}/{len(parts)}) {part}" for i, part in enumerate(parts, 1)]
        digits = len(str(len(parts)))


# --- voice ---------------------------------------------------------------------------


def normalize_voice(
    form: Mapping[str, str], *, message_id: str, turn: int, shared_session: bool = True
) -> Envelope:
    """A ``<Gather>`` result as an Envelope (pure: no I/O); deduplicated on ``CallSid:turn``."""
    call_sid, caller, to = require(form, "CallSid", "From", "To")
    return Envelope(
        message_id=message_id,
        channel=VOICE_CHANNEL,
        channel_message_id=f"{call_sid}:{turn}",
        sender=caller,
        session_id=caller_session(caller, channel=VOICE_CHANNEL, shared=shared_session, fallback=call_sid),
        text=(form.get("SpeechResult") or "").strip(),
        metadata={"provider": "twilio", "kind": "voice", "call_sid": call_sid, "turn": turn, "to": to,
                  "confidence": form.get("Confidence", "")},
        reply=ReplyRoute(callback_url=None, context={"call_sid": call_sid, "turn": turn}),
    )


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower()).split())


def is_goodbye(speech: str, phrases: str) -> bool:
    """Does a short utterance end with a goodbye phrase ("okay, bye")?  Long ones are questions."""
    said = _words(speech)
    if not said or len(said.split()) > 5:
        return False
    return any(said == p or said.endswith(f" {p}") for p in map(_words, phrases.split(",")) if p)


def spoken(text: str, limit: int) -> str:
    """Text fit to be read out: no markdown marks, one line, cut at a sentence below ``limit``."""
    text = re.sub(r"[*_#`>|~]+", " ", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [label](url) -> label
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = clip(text, limit)
    end = max(head.rfind(". "), head.rfind("! "), head.rfind("? "))
    return head[: end + 1] if end > limit // 3 else head.rsplit(" ", 1)[0] + "…"
