"""One message end to end: gunicorn edge -> Redis/Celery -> local LLM -> signed callback.

Everything is real: a redis-server with AOF, gunicorn, Celery worker
processes, the tiny GGUF model through the real backend libraries, and an
HTTP listener verifying each callback with the ``standardwebhooks`` package.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support.harness import BIN, CallbackReceiver, Proc, RedisServer, System, wait_until

pytestmark = pytest.mark.integration

MakeSystem = Callable[..., System]


def start(make_system: MakeSystem, **env: str) -> System:
    system = make_system(**env)
    system.start_all()
    return system


@pytest.mark.parametrize("backend", ["llama_cpp", "ctransformers"])
def test_two_messages_of_a_session_are_answered_in_order_with_history(
    make_system: MakeSystem, callbacks: CallbackReceiver, backend: str
) -> None:
    system = start(make_system, LLM_BACKEND=backend)
    first = system.post(user="alice", text="Hello, who are you?", reply_url=callbacks.url)
    second = system.post(user="alice", text="And what can you do?", reply_url=callbacks.url)
    assert first.status_code == second.status_code == 202
    first_id, second_id = first.json()["message_id"], second.json()["message_id"]

    answered = system.status(second_id, wait=30)
    assert answered["status"] == "answered", system.logs()
    wait_until(lambda: len(callbacks.received) == 2, 30, "both callbacks")

    assert [c.webhook_id for c in callbacks.received] == [first_id, second_id]
    assert callbacks.rejected == 0
    for callback in callbacks.received:
        assert callback.body["status"] == "answered" and callback.body["text"]
        assert callback.body["session_id"] == "api:tests:alice"
    assert system.status(first_id)["reply"]["context_message_ids"] == []
    assert answered["reply"]["context_message_ids"] == [first_id]
    assert answered["reply"]["completion_tokens"] > 0


def test_a_message_without_reply_url_is_answered_through_its_status(make_system: MakeSystem) -> None:
    system = start(make_system)
    message_id = system.post(user="bob", text="hi").json()["message_id"]
    record = system.status(message_id, wait=30)
    assert record["status"] == "answered" and record["reply"]["text"]


def test_a_worker_killed_mid_generation_answers_the_message_exactly_once(
    make_system: MakeSystem, callbacks: CallbackReceiver
) -> None:
    # Long replies (the tiny model rarely stops early) leave time to kill mid-generation. They must also fit the
    # task's time limit on a loaded machine (1,500 tokens took over 8 s with one core busy), and a whole-worker
    # SIGKILL is recovered after the visibility timeout, which must exceed the limit: the waits derive from them.
    limits = {"TASK_SOFT_TIME_LIMIT": 30, "TASK_TIME_LIMIT": 34, "VISIBILITY_TIMEOUT": 36}
    system = start(make_system, LLM_MAX_TOKENS="1500", **{k: str(v) for k, v in limits.items()})
    message_id = system.post(user="carol", text="Tell me a long story", reply_url=callbacks.url).json()["message_id"]
    wait_until(lambda: system.status(message_id)["status"] == "processing", 30, "generation to start", 0.01)

    system.procs["core"].kill()  # SIGKILL to the whole worker: parent and pool child
    killed_at = time.monotonic()
    assert system.status(message_id)["status"] == "processing"
    system.start_worker("core", "core")

    ended = limits["VISIBILITY_TIMEOUT"] + limits["TASK_SOFT_TIME_LIMIT"] + 30
    wait_until(lambda: system.status(message_id, wait=5)["status"] in ("answered", "failed"), ended, "the answer")
    assert system.status(message_id)["status"] == "answered", system.logs()
    wait_until(lambda: len(callbacks.for_message(message_id)) >= 1, 30, "the callback")
    recovery = time.monotonic() - killed_at
    time.sleep(3)  # a duplicate would arrive now: the restored task and the delivery retry are both done
    assert len(callbacks.received) == 1
    print(f"recovered {recovery:.1f}s after SIGKILL (visibility timeout {limits['VISIBILITY_TIMEOUT']}s)")


def test_redis_down_gets_503_and_the_edge_recovers_when_it_returns(
    make_system: MakeSystem, tmp_path: Path
) -> None:
    own_redis = RedisServer(tmp_path / "redis")
    try:
        system = make_system(redis_url=own_redis.url)
        system.start_edge()
        system.start_worker("core", "core")
        assert system.post(user="dave", text="before").status_code == 202

        own_redis.stop()
        down = system.post(user="dave", text="during")
        assert down.status_code == 503, down.text
        assert "error" in down.json()
        assert requests.get(f"{system.base_url}/readyz", timeout=10).status_code == 503

        own_redis.restart()
        wait_until(lambda: requests.get(f"{system.base_url}/readyz", timeout=5).ok, 30, "readiness")
        after = system.post(user="dave", text="after")
        assert after.status_code == 202
        assert system.status(after.json()["message_id"], wait=30)["status"] == "answered", system.logs()
    finally:
        own_redis.stop()


def test_a_delivery_worker_refuses_to_start_without_a_signing_secret(make_system: MakeSystem) -> None:
    system = make_system(SWITCHBOARD_SECRET="")
    argv = [str(BIN / "celery"), "-A", "core_worker.delivery_worker", "worker", "-Q", "deliver", "--pool", "threads"]
    proc = Proc("io-nosecret", argv, system.env, system.log_dir)
    assert proc.popen is not None
    assert proc.popen.wait(timeout=60) != 0
    assert "SWITCHBOARD_SECRET is not set" in proc.log()
