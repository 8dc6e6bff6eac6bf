"""The convert step and its wiring: intake routing, the core waiting, idempotency, provenance, budget."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest

from core_worker.processor import CONVERT_TIMEOUT_TEXT, SessionProcessor
from core_worker.sessions import SessionStore
from edge.media.fetch import Fetched, FetchError, Transient
from edge.media.step import ConvertStep, Retry, compose_text, trimmed
from redis_stores.deadletters import DeadLetters
from redis_stores.helper_registry import registry_from_settings
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.schemas import Attachment, Envelope
from tasks.settings import Settings
from tests.support import media_files as mf
from tests.support.factories import QueuedDeliveries, delivery_task, envelope


@dataclass
class StubFetcher:
    files: dict[str, bytes]
    failures: dict[str, Exception] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def get(self, url: str, max_bytes: int) -> Fetched:
        self.calls.append(url)
        if url in self.failures:
            raise self.failures[url]
        return Fetched(self.files[url], "")


def att(name: str, mime: str, data: bytes = b"x") -> Attachment:
    return Attachment(mime=mime, size=len(data), name=name, url=f"http://127.0.0.1:9/{name}")


def converting(store: MessageStore, *attachments: Attachment, text: str = "look") -> Envelope:
    env = envelope(text=text, attachments=attachments)
    store.admit(env, None, {"stage": "converting"})
    return env


@pytest.fixture
def resumed() -> list[tuple[str, str]]:
    return []


def make_step(settings: Settings, store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
              resumed: list[tuple[str, str]], fetcher: StubFetcher) -> ConvertStep:
    step = ConvertStep(settings, store, registry_from_settings(fake_redis, keys, settings),
                       lambda m, s: resumed.append((m, s)), fetcher=fetcher)  # type: ignore[arg-type]
    return step


def test_attachments_become_text_with_provenance_then_the_core_is_resumed(
    settings: Settings, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    resumed: list[tuple[str, str]],
) -> None:
    pdf = att("invoice.pdf", "application/pdf")
    notes = att("notes.txt", "text/plain")
    fetcher = StubFetcher({pdf.url: mf.pdf_bytes(["Total 12 EUR", "Due Friday"]), notes.url: b"buy milk"})
    env = converting(message_store, pdf, notes, text="what is this?")
    step = make_step(settings, message_store, fake_redis, keys, resumed, fetcher)
    assert step.run(env.message_id) == "converted 2 attachment(s)"
    record = message_store.get(env.message_id)
    assert record is not None and record.stage is None
    assert record.envelope["text"] == ("what is this?\n\n[from invoice.pdf, page 1] Total 12 EUR\n\n"
                                       "[from invoice.pdf, page 2] Due Friday\n\n[from notes.txt] buy milk")
    converted = record.envelope["metadata"]["attachments_converted"]
    assert [c["name"] for c in converted] == ["invoice.pdf", "notes.txt"] and converted[0]["url"] == pdf.url
    assert len(record.envelope["attachments"]) == 2  # the originals stay referenced
    assert resumed == [(env.message_id, env.session_id)]
    # A redelivered task converts nothing again and only resumes the core (idempotent).
    assert step.run(env.message_id) == "already converted" and len(fetcher.calls) == 2


def test_a_corrupt_or_unsupported_file_becomes_a_polite_line(
    settings: Settings, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    resumed: list[tuple[str, str]],
) -> None:
    bad = att("invoice.pdf", "application/pdf")
    exe = att("tool.exe", "application/x-msdownload")
    gone = att("gone.txt", "text/plain")
    fetcher = StubFetcher({bad.url: mf.corrupt_pdf_bytes()}, failures={gone.url: FetchError("404")})
    env = converting(message_store, bad, exe, gone, text="")
    make_step(settings, message_store, fake_redis, keys, resumed, fetcher).run(env.message_id)
    record = message_store.get(env.message_id)
    assert record is not None
    assert record.envelope["text"].splitlines()[::2] == [
        "[invoice.pdf could not be read: the PDF is corrupt]",
        "[tool.exe could not be read: files of type application/x-msdownload are not supported]",
        "[gone.txt could not be read: it could not be downloaded]",
    ]


def test_a_transient_fetch_error_is_retried_then_reported(
    settings: Settings, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    resumed: list[tuple[str, str]],
) -> None:
    flaky = att("a.txt", "text/plain")
    fetcher = StubFetcher({}, failures={flaky.url: Transient("503")})
    env = converting(message_store, flaky)
    step = make_step(settings.replace(media_fetch_retries=2), message_store, fake_redis, keys, resumed, fetcher)
    with pytest.raises(Retry) as again:
        step.run(env.message_id, retries=0)
    assert 0 < again.value.delay <= 10 and resumed == []
    step.run(env.message_id, retries=2)
    record = message_store.get(env.message_id)
    assert record is not None and "its server did not answer" in record.envelope["text"]


def test_an_oversized_attachment_is_not_fetched(
    settings: Settings, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    resumed: list[tuple[str, str]],
) -> None:
    big = Attachment(mime="image/png", size=settings.media_max_image_bytes + 1, name="big.png",
                     url="http://127.0.0.1:9/big.png")
    fetcher = StubFetcher({})
    env = converting(message_store, big)
    make_step(settings, message_store, fake_redis, keys, resumed, fetcher).run(env.message_id)
    record = message_store.get(env.message_id)
    assert record is not None and "larger than the 20 MB limit" in record.envelope["text"] and fetcher.calls == []


def test_converted_text_is_cut_to_its_budget_with_a_note() -> None:
    text = compose_text("hi", [{"name": "long.txt", "sections": [["", "word " * 1000]]}], budget=100)
    assert text.startswith("hi\n\n[from long.txt] word") and "the attachments' text was cut here" in text
    assert len(text) < 250
    empty = compose_text("hi", [{"name": "blank.png", "sections": [["text in the image",
                                                                      "(the image contains no readable text)"]]}], 100)
    assert empty == "hi\n\n[from blank.png, text in the image: the image contains no readable text]"


def test_a_huge_conversion_is_kept_only_up_to_the_budget_and_still_says_how_much_was_cut() -> None:
    result = {"name": "big.txt", "sections": [["page 1", "a" * 600_000], ["page 2", "b" * 400_000]]}
    kept = trimmed(result, 8000)
    assert sum(len(text) for _, text in kept["sections"]) == 8000 and kept["omitted"] == 992_000
    assert len(json.dumps(kept)) < 9000  # the checkpoint on the record, not the file
    whole, short = compose_text("hi", [result], budget=8000), compose_text("hi", [kept], budget=8000)
    assert short.split(" …")[0] == whole.split(" …")[0]  # the same text the model sees
    count = re.compile(r"(\d+) more characters")
    # what was cut is counted in characters of text either way; only the dropped section's label differs
    assert abs(int(count.findall(short)[0]) - int(count.findall(whole)[0])) < 100


@pytest.fixture
def processor(settings: Settings, fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore,
              delivered: QueuedDeliveries) -> SessionProcessor:
    class EchoLLM:
        name, context_length, constrains_json = "echo", 2048, False

        def chat(self, messages: Any, **_: Any) -> Any:
            from core_worker.llm import Completion
            return Completion(f"echo: {messages[-1].content}", 1, 1, "stop")

        def count_tokens(self, text: str) -> int:
            return len(text.split())

        def close(self) -> None:
            pass

    sessions = SessionStore(fake_redis, keys, lease_seconds=30, session_ttl=600, status_ttl=600, max_turns=10)
    return SessionProcessor(settings=settings, keys=keys, messages=message_store, sessions=sessions,
                            llm=lambda: EchoLLM(), deliver=delivery_task,
                            dead_letters=DeadLetters(fake_redis, keys))


@pytest.fixture
def delivered(fake_redis: fakeredis.FakeRedis) -> QueuedDeliveries:
    return QueuedDeliveries(fake_redis)


def test_the_core_waits_for_a_converting_head_then_answers_with_its_text(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    settings: Settings, delivered: QueuedDeliveries, resumed: list[tuple[str, str]],
) -> None:
    notes = att("notes.txt", "text/plain")
    env = converting(message_store, notes, text="read this")
    later = envelope(text="and this")
    message_store.admit(later)
    assert processor.run(env.session_id, later.message_id) is False  # parked behind the converting head
    assert delivered == [] and processor.retry_delay(env.session_id, env.message_id) > 1.0
    make_step(settings, message_store, fake_redis, keys, resumed, StubFetcher({notes.url: b"milk"})).run(
        env.message_id)
    assert processor.run(env.session_id, later.message_id) is True
    assert [d["text"] for d in delivered] == ["echo: read this\n\n[from notes.txt] milk", "echo: and this"]


def test_a_conversion_that_never_finishes_gets_a_polite_notice(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    delivered: QueuedDeliveries,
) -> None:
    env = converting(message_store, att("clip.mp4", "video/mp4"))
    fake_redis.hset(keys.message(env.message_id), "created_at", repr(time.time() - 10_000))
    assert processor.run(env.session_id, env.message_id) is True
    assert delivered[0]["text"] == CONVERT_TIMEOUT_TEXT
    assert json.loads(fake_redis.hget(keys.message(env.message_id), "reply") or "{}")["text"] == CONVERT_TIMEOUT_TEXT


def test_our_own_public_urls_are_fetched_through_the_internal_base_url(
    settings: Settings, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    resumed: list[tuple[str, str]],
) -> None:
    public = Attachment(mime="text/plain", size=2, name="a.txt", url="https://sb.example.com/v1/files/abc")
    fetcher = StubFetcher({"http://10.0.0.5:8000/v1/files/abc": b"hi"})
    env = converting(message_store, public)
    moved = settings.replace(public_base_url="https://sb.example.com", internal_base_url="http://10.0.0.5:8000/")
    make_step(moved, message_store, fake_redis, keys, resumed, fetcher).run(env.message_id)
    assert fetcher.calls == ["http://10.0.0.5:8000/v1/files/abc"]


def test_giving_up_hands_the_message_on_with_a_polite_line(
    settings: Settings, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    resumed: list[tuple[str, str]],
) -> None:
    env = converting(message_store, att("a.txt", "text/plain"), text="hi")
    step = make_step(settings, message_store, fake_redis, keys, resumed, StubFetcher({}))
    step.give_up(env.message_id, "an internal error stopped the conversion")
    record = message_store.get(env.message_id)
    assert record is not None and record.stage is None and resumed == [(env.message_id, env.session_id)]
    assert record.envelope["text"] == "hi\n\n[a.txt could not be read: an internal error stopped the conversion]"
