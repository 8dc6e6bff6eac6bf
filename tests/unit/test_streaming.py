"""Partial replies on the core side: throttling, sequence numbers, fencing, and who gets callbacks."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import fakeredis
import pytest

from core_worker.llm import ChatMessage, Completion
from core_worker.llm.base import Progress, chat_with_progress, hold_back_stop
from core_worker.partial_delivery import partial_body, partial_webhook_id
from core_worker.sessions import Lease, SessionStore
from core_worker.streaming import PartialPublisher, PartialStream, PartialThrottle, complete_word
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.schemas import Envelope, ReplyRoute

# --- the throttle (pure) ------------------------------------------------------------------


def test_the_first_partial_waits_for_a_whole_word_or_enough_characters() -> None:
    throttle = PartialThrottle(interval=0.4, first_chars=12)
    assert throttle.accept("Hel", now=0.0) is None
    assert throttle.accept("Hello", now=0.01) is None  # no space after it yet: the word may go on
    assert throttle.accept("Hello th", now=0.02) == 1
    long_word = PartialThrottle(interval=0.4, first_chars=12)
    assert long_word.accept("Supercalifragilistic", now=0.0) == 1


def test_later_partials_come_at_most_once_per_interval_and_only_when_the_text_grew() -> None:
    throttle = PartialThrottle(interval=0.4, first_chars=4)
    assert throttle.accept("one two", now=10.0) == 1
    assert not throttle.due(10.39)
    assert throttle.due(10.4)
    assert throttle.accept("one two", now=10.5) is None  # nothing new: not a partial
    assert throttle.due(10.5)  # and the clock keeps asking until there is something new
    assert throttle.accept("one two three", now=10.6) == 2
    assert not throttle.due(10.9) and throttle.due(11.0)
    assert throttle.last_text == "one two three"


def test_complete_word() -> None:
    assert not complete_word("   ") and not complete_word(" Hello") and complete_word("Hello ")
    assert complete_word("  a b")


def test_hold_back_stop_hides_a_stop_string_while_it_is_being_written() -> None:
    stops = ["<|im_end|>", "</s>"]
    assert hold_back_stop("Hello <|im", stops) == "Hello "
    assert hold_back_stop("Hello <", stops) == "Hello "
    assert hold_back_stop("Hello <|im_end|> junk", stops) == "Hello "
    assert hold_back_stop("a < b", stops) == "a < b"
    assert hold_back_stop("plain", []) == "plain"


# --- the per-message stream ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(stream: PartialStream, clock: Clock, words: Sequence[str], step: float) -> list[int]:
    """Offer the text word by word, ``step`` seconds apart; how many times the text was decoded."""
    decoded: list[int] = []
    for count in range(1, len(words) + 1):
        clock.now += step

        def text(count: int = count) -> str:
            decoded.append(count)
            return " ".join(words[:count])

        stream(text)
    return decoded


def test_the_stream_decodes_only_when_a_partial_is_due_and_publishes_in_order() -> None:
    clock, published = Clock(), []

    def publish(seq: int, text: str) -> bool:
        published.append((seq, text))
        return True

    stream = PartialStream(PartialThrottle(interval=0.4, first_chars=100), publish, clock)
    decoded = feed(stream, clock, [f"w{i}" for i in range(20)], step=0.1)  # 2 s of "tokens"
    assert [seq for seq, _ in published] == list(range(1, len(published) + 1))
    assert 4 <= len(published) <= 6  # one at once, then one per 0.4 s
    assert len(decoded) < 12  # not decoded after every token
    assert published[0] == (1, "w0 w1")  # the first whole word ("w0 ", seen once w1 started)
    assert all(len(a) < len(b) for (_, a), (_, b) in itertools.pairwise(published))


def test_a_refused_or_failed_publish_ends_the_partials_but_nothing_else() -> None:
    clock = Clock()
    refused = PartialStream(PartialThrottle(interval=0.1, first_chars=1), lambda seq, text: False, clock)
    feed(refused, clock, ["a", "b", "c"], step=1)
    assert refused.closed and refused.published == 0

    def broken(seq: int, text: str) -> bool:
        raise ConnectionError("redis went away")

    failing = PartialStream(PartialThrottle(interval=0.1, first_chars=1), broken, clock)
    feed(failing, clock, ["a", "b", "c"], step=1)  # must not raise into the model's loop
    assert failing.closed


# --- backends without streaming ------------------------------------------------------------


class PlainBackend:
    name, context_length, constrains_json = "plain", 2048, False

    def chat(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
             json_schema: dict[str, Any] | None = None) -> Completion:
        return Completion("the answer", 3, 2, "stop")

    def count_tokens(self, text: str) -> int:
        return 1

    def close(self) -> None:
        pass


class StreamingBackend(PlainBackend):
    streams = True

    def chat(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
             json_schema: dict[str, Any] | None = None, on_progress: Progress | None = None) -> Completion:
        if on_progress:
            on_progress(lambda: "the")
        return super().chat(messages)


def test_a_backend_without_streaming_gives_its_final_answer_and_no_partials() -> None:
    offered: list[Callable[[], str]] = []
    completion = chat_with_progress(PlainBackend(), [ChatMessage("user", "hi")], max_tokens=5,
                                    on_progress=offered.append)
    assert completion.text == "the answer" and offered == []
    completion = chat_with_progress(StreamingBackend(), [ChatMessage("user", "hi")], max_tokens=5,
                                    on_progress=offered.append)
    assert completion.text == "the answer" and [f() for f in offered] == ["the"]


# --- publishing (fenced, into the record; callbacks for provider channels) ---------------------


@pytest.fixture
def sessions(fake_redis: fakeredis.FakeRedis, keys: Keys) -> SessionStore:
    return SessionStore(fake_redis, keys, lease_seconds=30, session_ttl=3600, status_ttl=3600, max_turns=10)


def admitted(store: MessageStore, channel: str, interval: float, callback: str | None = None) -> Envelope:
    envelope = Envelope(message_id=f"m-{channel}", channel=channel, channel_message_id=None, sender="bob",
                        session_id=f"{channel}:bob", text="hi",
                        reply=ReplyRoute(callback_url=callback, context={"chat_id": 7}, stream_interval=interval))
    store.admit(envelope)
    return envelope


def publisher(fake_redis: fakeredis.FakeRedis, keys: Keys, sent: list[dict[str, Any]]) -> PartialPublisher:
    return PartialPublisher(fake_redis, keys, interval=0.4, first_chars=4, send_partial=sent.append)


def test_a_partial_lands_in_the_record_and_wakes_a_partial_long_poll(
    fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore, sessions: SessionStore
) -> None:
    sent: list[dict[str, Any]] = []
    envelope = admitted(message_store, "api", interval=0.4)
    lease = sessions.acquire(envelope.session_id)
    assert lease is not None
    pub = publisher(fake_redis, keys, sent)
    assert pub.publish(lease, envelope, 1, "Hello wor")
    record = message_store.wait(envelope.message_id, 5, after_partial=0)  # returns at once: seq 1 > 0
    assert record is not None and record.public()["partial"] == {"seq": 1, "text": "Hello wor"}
    assert not pub.publish(lease, envelope, 1, "again")  # an old or repeated seq is refused
    assert sent == []  # an API client reads partials from the record only


def test_a_worker_that_lost_its_lease_cannot_publish(
    fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore, sessions: SessionStore
) -> None:
    sent: list[dict[str, Any]] = []
    envelope = admitted(message_store, "telegram", interval=1.0, callback="http://127.0.0.1:9/cb")
    stale = Lease(envelope.session_id, 41)  # a token that is not the current one
    assert not publisher(fake_redis, keys, sent).publish(stale, envelope, 1, "zombie text")
    record = message_store.get(envelope.message_id)
    assert record is not None and record.partial is None and sent == []


def test_a_provider_channel_gets_a_partial_callback_and_a_finished_message_gets_none(
    fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore, sessions: SessionStore
) -> None:
    sent: list[dict[str, Any]] = []
    envelope = admitted(message_store, "telegram", interval=1.0, callback="http://127.0.0.1:9/cb")
    lease = sessions.acquire(envelope.session_id)
    assert lease is not None
    pub = publisher(fake_redis, keys, sent)
    stream = pub.open(lease, envelope)
    assert stream is not None and stream.throttle.interval == 1.0  # the channel's interval beats the floor
    assert pub.publish(lease, envelope, 1, "Hello there")
    assert [(p["seq"], p["text"], p["context"]) for p in sent] == [(1, "Hello there", {"chat_id": 7})]
    message_store.update(envelope.message_id, status="answered")
    assert not pub.publish(lease, envelope, 2, "Hello there again")
    record = message_store.get(envelope.message_id)
    assert record is not None and "partial" not in record.public()  # the final reply replaces it
    assert len(sent) == 1


def test_a_channel_that_did_not_ask_gets_no_stream(
    fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore, sessions: SessionStore
) -> None:
    envelope = admitted(message_store, "sms", interval=0.0, callback="http://127.0.0.1:9/cb")
    lease = sessions.acquire(envelope.session_id)
    assert lease is not None
    assert publisher(fake_redis, keys, []).open(lease, envelope) is None


def test_the_partial_callback_body_and_id() -> None:
    body = partial_body({"message_id": "m1", "session_id": "s", "channel": "slack", "seq": 3, "text": "Hi",
                         "context": {"channel": "C1"}, "callback_url": "http://x"})
    assert '"type":"message.partial"' in body and '"seq":3' in body and "callback_url" not in body
    assert partial_webhook_id("m1", 3) == "m1.partial.3"
