"""The model in a child process (core_worker/llm/model_process.py), with real spawned children and the recording
backend (tests/support/recording_backend.py), which writes down in the child what it ran, beside what, and
whether it was stopped.  Calls are ordered by holds the test releases, never by clocks."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from core_worker.llm.base import BackendConfig, ChatMessage, ModelLoadError
from core_worker.llm.model_process import ModelProcess, ModelProcessDied, generating_alone
from tests.support.harness import wait_until
from tests.support.recording_backend import LOAD_FAILURE, RECORD_ENV, events, release

pytestmark = pytest.mark.integration

BACKEND = "tests.support.recording_backend:"
LOAD_TIMEOUT = 60.0  # a spawned interpreter's imports on a busy machine; the echo model loads at once


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the children write their events to (children inherit the environment)."""
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(path))
    return path


@pytest.fixture
def start() -> Iterator[Callable[..., ModelProcess]]:
    """Starts a model process over a recording backend; every one is closed after the test."""
    started: list[ModelProcess] = []

    def make(factory: str = "factory", *, load_timeout: float = LOAD_TIMEOUT, parallel: int = 4) -> ModelProcess:
        config = BackendConfig(backend=BACKEND + factory, model_path=None, n_ctx=2048, parallel=parallel)
        process = ModelProcess(config, load_timeout=load_timeout)
        started.append(process)
        return process

    yield make
    for process in started:
        process.close()


def ask(process: ModelProcess, text: str, on_progress: Any = None) -> str:
    return process.chat([ChatMessage("user", text)], on_progress=on_progress).text


def starts(record: Path, *texts: str) -> bool:
    begun = {e["text"] for e in events(record, "start")}
    return all(text in begun for text in texts)


def test_a_killed_child_fails_its_calls_in_flight_and_the_next_call_starts_a_new_one(
    record: Path, start: Callable[..., ModelProcess]
) -> None:
    process = start()
    first_pid = process.pid
    assert first_pid is not None
    with ThreadPoolExecutor(2) as pool:
        in_flight = [pool.submit(ask, process, f"hold:never {name}") for name in "AB"]
        wait_until(lambda: starts(record, "hold:never A", "hold:never B"), 30, "both calls to start in the child")
        os.kill(first_pid, signal.SIGKILL)
        for call in in_flight:
            with pytest.raises(ModelProcessDied):
                call.result(timeout=30)
    assert ask(process, "after the crash") == "echo: after the crash"
    assert process.starts == 2
    assert process.pid not in (None, first_pid)
    assert [e["pid"] for e in events(record, "loading")] == [first_pid, process.pid]


def test_a_model_slower_to_load_than_model_load_timeout_fails_and_its_child_is_gone(
    record: Path, start: Callable[..., ModelProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECORDING_BACKEND_LOAD_SECONDS", "120")
    with pytest.raises(ModelLoadError, match="MODEL_LOAD_TIMEOUT"):
        start("slow_load_factory", load_timeout=5)  # time for the child's imports (~0.5 s), not its 120 s load
    (loading,) = events(record, "loading")
    with pytest.raises(ProcessLookupError):
        os.kill(loading["pid"], 0)  # killed and reaped
    assert not [p for p in multiprocessing.active_children() if p.name == "switchboard-model"]


def test_a_factory_that_raises_gives_model_load_error_with_its_message(
    record: Path, start: Callable[..., ModelProcess]
) -> None:
    with pytest.raises(ModelLoadError, match=LOAD_FAILURE):
        start("failing_factory")


def test_an_alone_call_runs_with_nothing_beside_it_while_ordinary_calls_overlap(
    record: Path, start: Callable[..., ModelProcess]
) -> None:
    process = start(parallel=4)
    waited = {name: threading.Event() for name in "DE"}

    def alone(text: str) -> str:
        with generating_alone():
            return ask(process, text)

    def noted(name: str) -> Callable[[Any], None]:
        return lambda text_so_far: waited[name].set()  # called when half a second passed with no answer

    with ThreadPoolExecutor(6) as pool:
        ordinary = [pool.submit(ask, process, f"hold:first {name}") for name in "ABC"]
        wait_until(lambda: starts(record, *(f"hold:first {n}" for n in "ABC")), 30, "three calls running")
        lone = pool.submit(alone, "hold:second X")
        release(record, "first")
        wait_until(lambda: starts(record, "hold:second X"), 30, "the alone call to start")
        later: list[Future[str]] = [pool.submit(ask, process, name, noted(name)) for name in "DE"]
        for event in waited.values():
            assert event.wait(30)  # they were sent and got no answer while X ran
        release(record, "second")
        replies = [f.result(timeout=30) for f in [*ordinary, lone, *later]]
    assert replies == [f"echo: hold:first {n}" for n in "ABC"] + ["echo: hold:second X", "echo: D", "echo: E"]
    order = [(e["event"], e["text"]) for e in events(record) if e["event"] in ("start", "end")]
    ends = {text: i for i, (kind, text) in enumerate(order) if kind == "end"}
    begins = {text: i for i, (kind, text) in enumerate(order) if kind == "start"}
    x = "hold:second X"
    assert all(ends[f"hold:first {n}"] < begins[x] for n in "ABC")  # X waited for everything running
    assert begins["D"] > ends[x] and begins["E"] > ends[x]  # and held off what came meanwhile
    max_running = {e["text"]: e["max_running"] for e in events(record, "end")}
    assert max_running[x] == 1
    assert all(max_running[f"hold:first {n}"] == 3 for n in "ABC")


def test_a_raising_progress_callback_stops_the_generation_in_the_child(
    record: Path, start: Callable[..., ModelProcess]
) -> None:
    process = start()

    class LeaseLost(Exception):
        pass

    seen: list[str] = []

    def lose_the_lease(text_so_far: Callable[[], str]) -> None:
        seen.append(text_so_far())
        if seen[-1]:  # some words arrived: the generation runs in the child
            raise LeaseLost("the lease went to another worker")

    with pytest.raises(LeaseLost):
        ask(process, "stream:100000 a very long answer", lose_the_lease)
    wait_until(lambda: bool(events(record, "stopped")), 30, "the child to stop the generation")
    (stopped,) = events(record, "stopped")
    assert stopped["error"] == "Cancelled"
    assert 0 < stopped["words"] < 100000
    assert ask(process, "still here") == "echo: still here"  # the child serves on


def test_close_ends_the_child_through_its_pipe_and_fails_the_call_in_flight(
    record: Path, start: Callable[..., ModelProcess]
) -> None:
    process = start()
    child = process._proc
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(ask(process, "hold:never A"))
        except Exception as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)  # a daemon: were the call to hang, the test fails, not waits
    caller.start()
    wait_until(lambda: starts(record, "hold:never A"), 30, "the call to start in the child")
    process.close()  # while the reader thread waits in recv() and progress keeps coming
    caller.join(30)
    assert not caller.is_alive() and isinstance(outcome[0], ModelProcessDied)
    wait_until(lambda: child.exitcode is not None, 30, "the child to be reaped")
    assert child.exitcode == 0  # it saw its pipe close and exited by itself, not killed (-9) after 10 s


def test_calls_from_eight_threads_get_their_own_replies(record: Path, start: Callable[..., ModelProcess]) -> None:
    process = start(parallel=4)

    def converse(thread: int) -> list[tuple[Any, Any]]:
        mismatches: list[tuple[Any, Any]] = []
        for turn in range(15):
            question = f"thread {thread} turn {turn}"
            reply = ask(process, question)
            if reply != f"echo: {question}":
                mismatches.append((question, reply))
            words = thread + turn + 1
            counted = process.count_tokens("w " * words)
            if counted != words + 1:  # the echo model counts a token a word, plus one
                mismatches.append((words, counted))
        return mismatches

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(converse, range(8)))
    assert results == [[] for _ in range(8)]
    assert len(events(record, "end")) == 8 * 15
