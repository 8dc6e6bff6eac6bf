from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fakeredis
import pytest
import redis

from core_worker.delivery import Deliverer, Outcome, backoff_delay
from outbound_http.host_policy import HostPolicy
from redis_stores.deadletters import DeadLetters
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.schemas import Reply, ReplyRoute
from tasks.settings import Settings
from tasks.signing import verify


class Receiver:
    """A loopback HTTP server answering with a scripted status."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def deliverer(
    settings: Settings, fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore
) -> Deliverer:
    return Deliverer(
        settings=settings, keys=keys, redis=fake_redis, messages=message_store,
        policy=HostPolicy(settings.allowed_host_list), dead_letter=DeadLetters(fake_redis, keys).add,
    )


@pytest.fixture(autouse=True)
def outbox(fake_redis: fakeredis.FakeRedis, keys: Keys) -> str:
    """The core queues each finished reply in its session's outbox; m1 is first."""
    key = keys.session_outbox("api:alice")
    fake_redis.rpush(key, "m1")
    return key


def payload(url: str, first_attempt_at: float | None = None, message_id: str = "m1") -> dict[str, object]:
    reply = Reply(message_id, "api:alice", "hello there", "api", ReplyRoute(url, {"to": "alice"}))
    return {**reply.to_dict(), "first_attempt_at": first_attempt_at}


def test_replies_of_a_session_are_delivered_in_answer_order(
    deliverer: Deliverer, receiver: Receiver, fake_redis: fakeredis.FakeRedis, outbox: str
) -> None:
    fake_redis.rpush(outbox, "m2")
    assert deliverer.attempt(payload(receiver.url, message_id="m2"))[0] is Outcome.WAIT
    assert deliverer.attempt(payload(receiver.url))[0] is Outcome.DELIVERED
    assert deliverer.attempt(payload(receiver.url, message_id="m2"))[0] is Outcome.DELIVERED
    assert [h["webhook-id"] for h, _ in receiver.requests] == ["m1", "m2"]
    assert fake_redis.llen(outbox) == 0


def test_a_reply_is_posted_signed_and_only_once(deliverer: Deliverer, receiver: Receiver, settings: Settings) -> None:
    assert deliverer.attempt(payload(receiver.url))[0] is Outcome.DELIVERED
    assert deliverer.attempt(payload(receiver.url))[0] is Outcome.DUPLICATE
    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    verify(settings.switchboard_secret, body, headers)
    assert headers["webhook-id"] == "m1"
    assert json.loads(body)["text"] == "hello there"
    assert json.loads(body)["context"] == {"to": "alice"}


def test_server_errors_are_retried(deliverer: Deliverer, receiver: Receiver) -> None:
    receiver.status = 503
    assert deliverer.attempt(payload(receiver.url))[0] is Outcome.RETRY
    receiver.status = 200
    assert deliverer.attempt(payload(receiver.url))[0] is Outcome.DELIVERED


def test_client_errors_are_dead_lettered_with_the_reason(
    deliverer: Deliverer, receiver: Receiver, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    receiver.status = 404
    outcome, detail = deliverer.attempt(payload(receiver.url))
    assert outcome is Outcome.DEAD and "404" in detail
    assert DeadLetters(fake_redis, keys).recent()[0]["reason"].startswith("HTTP 404")


def test_a_reply_older_than_the_max_age_is_dead_lettered(deliverer: Deliverer, receiver: Receiver) -> None:
    receiver.status = 500
    assert deliverer.attempt(payload(receiver.url, first_attempt_at=1.0))[0] is Outcome.DEAD


def test_an_unreachable_target_is_retried(deliverer: Deliverer) -> None:
    assert deliverer.attempt(payload("http://127.0.0.1:9/nothing-listens"))[0] is Outcome.RETRY


def test_a_url_outside_the_allow_list_is_dead_lettered(deliverer: Deliverer) -> None:
    assert deliverer.attempt(payload("http://192.0.2.1/cb"))[0] is Outcome.DEAD


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap() -> None:
    assert backoff_delay(0, 1.0, 60.0, rng=lambda: 1.0) == 1.0
    assert backoff_delay(3, 1.0, 60.0, rng=lambda: 1.0) == 8.0
    assert backoff_delay(30, 1.0, 60.0, rng=lambda: 1.0) == 60.0
    assert backoff_delay(3, 1.0, 60.0, rng=lambda: 0.5) == 4.0


def test_a_delivery_redis_could_not_record_at_first_is_recorded_not_posted_again(
    deliverer: Deliverer, receiver: Receiver, fake_redis: fakeredis.FakeRedis, outbox: str
) -> None:
    """Found by the fault suite (redis-sigstop): Redis froze between the POST and its bookkeeping; the task
    died, the claim stayed, and the reply was posted again minutes later by the sweeper."""
    settle, failures = deliverer._settle_script, [redis.TimeoutError("frozen"), redis.TimeoutError("frozen")]

    def flaky(**kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return settle(**kwargs)

    deliverer._settle_script = flaky  # type: ignore[assignment]
    assert deliverer.attempt(payload(receiver.url))[0] is Outcome.DELIVERED
    assert failures == [] and fake_redis.llen(outbox) == 0
    assert deliverer.attempt(payload(receiver.url))[0] is Outcome.DUPLICATE
    assert len(receiver.requests) == 1


def test_a_claim_left_by_the_same_task_does_not_hold_its_retry_back_but_another_tasks_does(
    deliverer: Deliverer, receiver: Receiver, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    """Found by bench/redis_recovery.py (sigstop-30s): the CLAIM a worker sent just before Redis froze ran when
    Redis thawed, after the worker had given the call up; every retry then waited 31 s for that claim."""
    fake_redis.set(keys.delivery_claim("m1"), "task-1", ex=31)  # run at the thaw for the attempt that gave up
    assert deliverer.attempt(payload(receiver.url), owner="task-2")[0] is Outcome.WAIT  # someone else's: wait
    assert deliverer.attempt(payload(receiver.url), owner="task-1")[0] is Outcome.DELIVERED  # its own: go on
    assert len(receiver.requests) == 1 and not fake_redis.exists(keys.delivery_claim("m1"))


def client_payload(url: str, client: str, session: str = "api:alice") -> dict[str, object]:
    reply = Reply("m1", session, "hello there", "api", ReplyRoute(url, owner=client))
    return {**reply.to_dict(), "first_attempt_at": None}


def test_a_client_holds_at_most_its_delivery_slots(
    deliverer: Deliverer, receiver: Receiver, fake_redis: fakeredis.FakeRedis, keys: Keys, settings: Settings
) -> None:
    """Four replies to acme's slow receiver are being posted (DELIVERY_CONCURRENCY_PER_CLIENT=4): a fifth of
    acme's waits without taking a thread, another client's reply goes at once."""
    assert settings.delivery_concurrency_per_client == 4
    slots = keys.owner_deliveries("acme")
    fake_redis.zadd(slots, {f"m{n}": time.time() + 60 for n in range(6, 10)})
    outcome, detail = deliverer.attempt(client_payload(receiver.url, "acme"))
    assert outcome is Outcome.WAIT and "4 other replies" in detail
    assert receiver.requests == []
    assert deliverer.attempt(client_payload(receiver.url, "globex"))[0] is Outcome.DELIVERED
    assert fake_redis.zcard(keys.owner_deliveries("globex")) == 0  # released with the outcome


def test_a_slot_whose_holder_died_lapses_with_its_claim(
    deliverer: Deliverer, receiver: Receiver, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    slots = keys.owner_deliveries("acme")
    fake_redis.zadd(slots, {"m6": time.time() - 1, **{f"m{n}": time.time() + 60 for n in range(7, 10)}})
    assert deliverer.attempt(client_payload(receiver.url, "acme"))[0] is Outcome.DELIVERED
    assert fake_redis.zrange(slots, 0, -1) == ["m7", "m8", "m9"]


def test_channel_callbacks_take_no_client_slot(
    deliverer: Deliverer, receiver: Receiver, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    fake_redis.zadd(keys.owner_deliveries(""), {"m8": time.time() + 60, "m9": time.time() + 60})
    assert deliverer.attempt(payload(receiver.url))[0] is Outcome.DELIVERED


def test_two_copies_of_one_task_never_post_at_once(
    deliverer: Deliverer, receiver: Receiver, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    """Found by kill-io-worker with delivery slots: an io worker killed between publishing a retry and acking
    what it retried brings both copies back, with one task id; the claim lets a task take over its own, so
    both posted (30 ms apart, 14 s after the kill). Only the attempt holding the posting lease may post."""
    fake_redis.set(keys.delivery_claim("m1"), "task-1", ex=31)
    fake_redis.set(keys.delivery_posting("m1"), "the other copy's nonce", px=12_000)
    outcome, detail = deliverer.attempt(payload(receiver.url), owner="task-1")
    assert outcome is Outcome.WAIT and "another worker" in detail and receiver.requests == []
    fake_redis.delete(keys.delivery_posting("m1"))  # its POST's deadline passed (or it settled)
    assert deliverer.attempt(payload(receiver.url), owner="task-1")[0] is Outcome.DELIVERED
    assert not fake_redis.exists(keys.delivery_posting("m1"))  # its own lease, released with the outcome
