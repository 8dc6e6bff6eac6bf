"""The convert step for one message: fetch each attachment, convert it with limits, write the text back.

Kept free of Celery so it can be tested directly; ``edge/convert_worker.py``
wraps it in the ``convert.attachments`` task.  Progress is saved on the
message record after every attachment, so a redelivered or continued task
never converts the same file twice, and a message is never left stuck: every
failure becomes a polite line in the text the model sees.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.media.base import ConversionError, Section
from edge.media.fetch import Fetcher, FetchError, TooLarge, TooSlow, Transient
from edge.media.image import NO_TEXT
from edge.media.registry import kind_for
from edge.media.runner import Limits, run_converter
from edge.media.stt import NO_SPEECH
from outbound_http.host_policy import HostPolicy
from redis_stores.helper_registry import HelperRegistry
from redis_stores.messages import TERMINAL, MessageStore
from tasks.schemas import Attachment, Envelope
from tasks.settings import Settings

__all__ = ["ConvertStep", "Retry", "compose_text", "max_bytes_for"]

log = logging.getLogger(__name__)


class Retry(Exception):
    """Run the task again after ``delay`` seconds (a transient fetch error, or the time budget is spent)."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


def max_bytes_for(settings: Settings, mime: str) -> int:
    """The size limit of a MIME type's category (documents, images, audio, video)."""
    kind = kind_for(mime)
    category = kind.category if kind else "document"
    return int({
        "document": settings.media_max_document_bytes, "image": settings.media_max_image_bytes,
        "audio": settings.media_max_audio_bytes, "video": settings.media_max_video_bytes,
    }[category])


def _line(name: str, where: str, text: str) -> str:
    label = f"{name}, {where}" if where else name
    if text in (NO_TEXT, NO_SPEECH):
        return f"[from {label}: {text.strip('()')}]"
    return f"[from {label}] {text}"


def trimmed(result: dict[str, Any], budget: int) -> dict[str, Any]:
    """A conversion result holding at most ``budget`` characters of text (more can never be shown), with the
    number left out in ``omitted``: the checkpoint on the message record stays small whatever the file held
    (a 10 MB text file was a 10 MB field, kept for STATUS_TTL_SECONDS)."""
    room, sections, omitted = budget, [], int(result.get("omitted", 0))
    for where, text in result.get("sections") or []:
        kept = text[:max(room, 0)]
        omitted += len(text) - len(kept)
        room -= len(kept)
        if kept:
            sections.append([where, kept])
    return {**result, "sections": sections, "omitted": omitted} if result.get("sections") else result


def compose_text(original: str, results: list[dict[str, Any]], budget: int) -> str:
    """The message text the model sees: the person's words, then each file's text with its provenance,
    cut to ``budget`` characters of converted text with a note saying so."""
    parts: list[str] = []
    omitted = sum(int(result.get("omitted", 0)) for result in results)
    for result in results:
        if result.get("error"):
            parts.append(f"[{result['name']} could not be read: {result['error']}]")
        elif not result.get("sections"):
            parts.append(f"[{result['name']} contains no text]")
        else:
            parts.extend(_line(result["name"], where, text) for where, text in result["sections"])
    converted = "\n\n".join(parts)
    if len(converted) > budget or omitted:
        cut = max(len(converted) - budget, 0) + omitted
        converted = (f"{converted[:budget].rstrip()} …\n[the attachments' text was cut here: {cut} more characters "
                     "were left out]")
    return f"{original}\n\n{converted}".strip() if converted else original


@dataclass
class ConvertStep:
    settings: Settings
    messages: MessageStore
    helpers: HelperRegistry
    resume: Callable[[str, str], None]
    fetcher: Fetcher | None = None

    def __post_init__(self) -> None:
        if self.fetcher is None:
            s = self.settings
            auth: dict[str, tuple[str, str]] = {}
            if s.twilio_account_sid and s.twilio_auth_token:
                for host in s.media_twilio_hosts.split(","):
                    if host.strip():
                        auth[host.strip().lower()] = (s.twilio_account_sid, s.twilio_auth_token)
            self.fetcher = Fetcher(HostPolicy(s.allowed_host_list), timeout=s.media_fetch_timeout, basic_auth=auth,
                                   min_rate=s.media_fetch_min_rate, min_rate_after=s.media_fetch_min_rate_after)

    def limits(self) -> Limits:
        s = self.settings
        # A conversion must end well inside the task's own soft time limit.
        timeout = max(2.0, min(s.media_convert_timeout, s.task_soft_time_limit * 0.75))
        return Limits(timeout=timeout, memory_bytes=s.media_max_memory_mb * 1_048_576, options={
            "max_image_pixels": s.media_max_image_pixels, "ocr_lang": s.media_ocr_lang,
            "stt_engine": s.media_stt_engine, "stt_model": s.media_stt_model,
        })

    def run(self, message_id: str, retries: int = 0) -> str:
        """Convert what is left to convert; raises Retry to be called again. Returns what happened."""
        record = self.messages.get(message_id)
        if record is None:
            return "unknown message"
        if record.stage != "converting":
            if record.status not in TERMINAL:  # converted before a crash, maybe never resumed
                self.resume(message_id, record.session_id)
            return "already converted"
        raw: dict[str, str] = self.messages.redis.hgetall(self.messages.keys.message(message_id))  # type: ignore[assignment]
        done: list[dict[str, Any]] = json.loads(raw.get("converted") or "[]")
        envelope = Envelope.from_dict(record.envelope)
        pending = self._pending(envelope)
        started = time.monotonic()
        budget = self.settings.task_soft_time_limit * 0.8
        limits = self.limits()
        for index, attachment in enumerate(pending):
            if index < len(done):
                continue
            if time.monotonic() - started + limits.timeout + self.settings.media_fetch_timeout > budget and \
                    time.monotonic() - started > 0.5:
                raise Retry(0.0, "time budget spent; continuing in a new task")
            try:
                result = self._convert(attachment, limits)
            except Transient as exc:
                if retries < self.settings.media_fetch_retries:
                    raise Retry(min(0.5 * 2 ** retries, 10.0), str(exc)) from exc
                result = self._failed(attachment, "it could not be downloaded (its server did not answer)")
            done.append(trimmed(result, self.settings.media_max_text_chars))
            self.messages.update(message_id, converted=json.dumps(done))
        return self._finish(message_id, record.session_id, envelope, done)

    def give_up(self, message_id: str, reason: str) -> str:
        """After repeated unexpected errors: hand the message to the core with what was converted so far
        and a polite line for the rest, rather than leave it to the core's deadline."""
        record = self.messages.get(message_id)
        if record is None or record.stage != "converting":
            return "nothing to give up"
        raw: dict[str, str] = self.messages.redis.hgetall(self.messages.keys.message(message_id))  # type: ignore[assignment]
        done: list[dict[str, Any]] = json.loads(raw.get("converted") or "[]")
        envelope = Envelope.from_dict(record.envelope)
        for attachment in self._pending(envelope)[len(done):]:
            done.append(self._failed(attachment, reason))
        return self._finish(message_id, record.session_id, envelope, done)

    def _finish(self, message_id: str, session_id: str, envelope: Envelope, done: list[dict[str, Any]]) -> str:
        text = compose_text(envelope.text, done, self.settings.media_max_text_chars)
        metadata = {**envelope.metadata, "attachments_converted": [
            {k: v for k, v in r.items() if k not in ("sections", "omitted")} for r in done]}
        updated = {**envelope.to_dict(), "text": text, "metadata": metadata}
        self.messages.update(message_id, envelope=json.dumps(updated), stage="")
        self.messages.redis.hdel(self.messages.keys.message(message_id), "converted")  # the envelope holds it now
        self.resume(message_id, session_id)
        return f"converted {len(done)} attachment(s)"

    def _pending(self, envelope: Envelope) -> list[Attachment]:
        """The attachments to convert: those no live helper accepts (those go to the helper)."""
        accepted = [c for helper in self.helpers.all() for c in helper.capabilities]
        return [a for a in envelope.attachments if not any(c.accepts_mime(a.mime) for c in accepted)]

    def _internal(self, url: str) -> str:
        """Our own edge's URLs (uploads, mail attachments, Telegram proxy) are fetched the way workers reach
        the edge (INTERNAL_BASE_URL), not through the public address."""
        public, internal = self.settings.public_base_url.rstrip("/"), self.settings.internal_base_url.rstrip("/")
        if public != internal and url.startswith(f"{public}/"):
            return internal + url[len(public):]
        return url

    def _failed(self, attachment: Attachment, reason: str) -> dict[str, Any]:
        return {"name": attachment.name, "mime": attachment.mime, "url": attachment.url, "size": attachment.size,
                "error": reason}

    def _convert(self, attachment: Attachment, limits: Limits) -> dict[str, Any]:
        kind = kind_for(attachment.mime)
        if kind is None:
            return self._failed(attachment, f"files of type {attachment.mime} are not supported")
        limit = max_bytes_for(self.settings, attachment.mime)
        if attachment.size > limit:
            return self._failed(attachment, f"it is larger than the {limit // 1_048_576} MB limit for such files")
        assert self.fetcher is not None
        try:
            fetched = self.fetcher.get(self._internal(attachment.url), limit)
        except TooLarge:
            return self._failed(attachment, f"it is larger than the {limit // 1_048_576} MB limit for such files")
        except Transient:
            raise
        except TooSlow as exc:
            log.warning("fetching %s given up: %s", attachment.url, exc)
            return self._failed(attachment, "its server sent it too slowly")
        except FetchError as exc:
            log.warning("fetching %s failed: %s", attachment.url, exc)
            return self._failed(attachment, "it could not be downloaded")
        with tempfile.TemporaryDirectory(prefix="sb-attachment-") as tmp:
            path = Path(tmp) / "input"
            path.write_bytes(fetched.data)
            began = time.monotonic()
            try:
                sections: list[Section] = run_converter(kind.converter, path, limits)
            except ConversionError as exc:
                return self._failed(attachment, str(exc))
        result = self._failed(attachment, "")
        result.pop("error")
        result["sections"] = [[s.where, s.text] for s in sections if s.text]
        result["chars"] = sum(len(s.text) for s in sections)
        result["converter"] = kind.converter
        result["seconds"] = round(time.monotonic() - began, 3)
        return result
