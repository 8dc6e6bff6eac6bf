"""Helpers end to end: real helper processes (the SDK's CLI under gunicorn) registered with the real edge.

The model's *decision* comes from ``scripted_backend`` (a random-weight model
cannot choose tools meaningfully); registration, the per-helper queues, the
signed calls, the helpers themselves, composing and delivering the reply are
real.  ``test_the_real_model_routes_through_its_grammar`` runs the routing
prompt through llama.cpp on the tiny model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.support.harness import ROOT, RedisServer, System, wait_until
from tests.support.helper_apps import flaky_calls
from tests.support.helper_processes import CALCULATOR, CONVERTER, TOKEN, Helpers, ask
from tests.support.scripted_backend import SCRIPTED

pytestmark = pytest.mark.integration

DIVISION_BY_ZERO = "The calculator couldn't do that: division by zero."
MakeSystem = Callable[..., System]


@pytest.fixture
def system(make_system: MakeSystem) -> System:
    system = make_system(LLM_BACKEND=SCRIPTED, HELPER_REGISTRATION_TOKEN=TOKEN)
    system.start_all()
    return system


def test_a_slash_command_calls_the_helper_and_its_answer_is_the_reply(system: System, helpers: Helpers) -> None:
    helpers.start("calculator", "examples/helpers/calculator.py:helper")
    record = ask(system, "/calculate 6 * (3 + 4)")
    assert "42" in record["reply"]["text"]
    assert helpers.listed()["calculator"]["health"]["calls"] == 1


def test_the_model_routes_to_a_helper_and_composes_from_its_result(system: System, helpers: Helpers) -> None:
    helpers.start("calculator", "examples/helpers/calculator.py:helper")
    helpers.start("converter", "examples/helpers/converter.py:helper")
    direct = ask(system, "compute: 2 ** 10")
    assert "1024" in direct["reply"]["text"]
    composed = ask(system, "please convert 5 km to mi", user="bob")
    assert "Result of converter.convert_units" in composed["reply"]["text"]  # what the model was given
    assert "3.10" in composed["reply"]["text"]
    plain = ask(system, "hello there", user="carol")
    assert plain["reply"]["text"] == "echo: hello there"


def test_an_attachment_goes_to_the_helper_that_accepts_its_type(
    system: System, helpers: Helpers, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("one two three four five")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        helpers.start("fileinfo", "tests.support.helper_apps:helper")
        url = f"http://127.0.0.1:{server.server_address[1]}/notes.txt"
        record = ask(system, "what is in this file?", attachments=[{"url": url, "mime": "text/plain"}])
        assert record["reply"]["text"] == "notes.txt has 5 words"
    finally:
        server.shutdown()


def test_a_dead_helper_opens_its_circuit_gets_a_graceful_reply_and_comes_back(
    system: System, helpers: Helpers
) -> None:
    calculator = helpers.start("calculator", "examples/helpers/calculator.py:helper")
    helpers.start("converter", "examples/helpers/converter.py:helper")
    calculator.kill()
    for user in ("a", "b"):  # 2 messages x (1 call + 1 retry) >= CIRCUIT_FAILURE_THRESHOLD (3)
        record = ask(system, "/calculate 1 + 1", user=user)
        assert "calculator helper is unavailable" in record["reply"]["text"]
    assert helpers.listed()["calculator"]["health"]["circuit"] == "open"
    started = time.monotonic()
    record = ask(system, "/calculate 2 + 2", user="c")  # refused at once, no call made
    assert "unavailable" in record["reply"]["text"] and time.monotonic() - started < 3
    assert "3.10" in ask(system, "please convert 5 km to mi", user="d")["reply"]["text"]  # others unaffected

    helpers.start("calculator", "examples/helpers/calculator.py:helper", port=calculator.port)  # type: ignore[attr-defined]
    wait_until(lambda: helpers.listed()["calculator"]["health"]["circuit"] == "closed", 30, "a fresh circuit")
    assert "4" in ask(system, "/calculate 2 + 2", user="e")["reply"]["text"]


def test_a_refused_input_is_answered_with_the_helpers_own_message(system: System, helpers: Helpers) -> None:
    helpers.start("calculator", CALCULATOR)
    helpers.start("converter", CONVERTER)
    assert ask(system, "/calculate 1/0")["reply"]["text"] == DIVISION_BY_ZERO  # reply: direct, typed as a command
    routed = ask(system, "compute: 2 ** 10000000", user="bob")  # reply: direct, the model chose the calculator
    assert routed["reply"]["text"] == "The calculator couldn't do that: the result is too large."
    composed = ask(system, "please convert 5 km to kg", user="carol")["reply"]["text"]  # reply: model
    # The scripted model echoes what it was given: the helper's own message, to answer with.
    assert "converter.convert_units could not do this: cannot convert length (km) to mass (kg)" in composed
    assert "unavailable" not in composed
    calculator, converter = helpers.health("calculator"), helpers.health("converter")
    # Not retried (HELPER_RETRIES=1 would make 4 calls), not counted against the circuit.
    assert (calculator["calls"], calculator["refused_calls"], calculator["consecutive_failures"]) == (2, 2, 0)
    assert (converter["calls"], converter["refused_calls"]) == (1, 1)
    assert calculator["circuit"] == converter["circuit"] == "closed"


def test_ten_refused_inputs_from_one_user_leave_the_circuit_closed_for_everyone(
    system: System, helpers: Helpers
) -> None:
    helpers.start("calculator", CALCULATOR)
    posted = [system.post(user="mallory", text="/calculate 1/0") for _ in range(10)]
    assert [r.status_code for r in posted] == [202] * 10
    replies = [system.status(r.json()["message_id"], wait=30)["reply"]["text"] for r in posted]
    assert replies == [DIVISION_BY_ZERO] * 10
    health = helpers.health("calculator")
    assert (health["circuit"], health["consecutive_failures"], health["refused_calls"]) == ("closed", 0, 10)
    assert ask(system, "/calculate 2 + 2", user="bob")["reply"]["text"] == "2 + 2 = 4"


def test_a_failing_helper_opens_its_circuit_and_exactly_one_trial_call_closes_or_reopens_it(
    system: System, helpers: Helpers, tmp_path: Path
) -> None:
    """Through the real queues, with HELPER_RETRIES=1, CIRCUIT_FAILURE_THRESHOLD=3, CIRCUIT_RESET_SECONDS=5."""
    state = tmp_path / "flaky"
    state.mkdir()
    (state / "fail_until").write_text("3")  # a helper that answers 500 three times, then works
    helpers.start("flaky", "tests.support.helper_apps:flaky", env={"FLAKY_DIR": str(state)})

    def say(text: str, user: str) -> str:
        return str(ask(system, f"/echo {text}", user=user)["reply"]["text"])

    def circuit() -> str:
        return str(helpers.health("flaky")["circuit"])

    def half_open() -> None:
        wait_until(lambda: circuit() == "half-open", 30, "the circuit to half-open", 0.1)

    unavailable = "flaky helper is unavailable"
    assert unavailable in say("one", "a") and flaky_calls(state) == 2  # the call and its re-try
    assert circuit() == "closed"
    assert unavailable in say("two", "b") and flaky_calls(state) == 3  # the third 500 opens it: no re-try
    assert circuit() == "open"
    assert unavailable in say("three", "c") and flaky_calls(state) == 3  # refused at once, no call made
    half_open()
    assert say("four", "d") == "four (call 4)"  # exactly one trial call; it worked
    assert circuit() == "closed"
    assert say("five", "e") == "five (call 5)"

    (state / "fail_until").write_text("9")  # calls 6 to 9 fail
    assert unavailable in say("six", "f") and unavailable in say("seven", "g") and flaky_calls(state) == 8
    half_open()
    assert unavailable in say("eight", "h") and flaky_calls(state) == 9  # one trial, no re-try: it failed
    assert circuit() == "open"  # ... and re-opened the circuit
    half_open()
    assert say("nine", "i") == "nine (call 10)"
    assert circuit() == "closed"


def test_a_sender_past_the_helper_call_limit_is_told_to_slow_down_while_others_are_served(
    make_system: MakeSystem
) -> None:
    system = make_system(LLM_BACKEND=SCRIPTED, HELPER_REGISTRATION_TOKEN=TOKEN, RATE_LIMIT_HELPER_CALLS="3/hour")
    system.start_all()
    helpers = Helpers(system)
    try:
        helpers.start("calculator", CALCULATOR)
        answers = [ask(system, f"/calculate {n} + 1", user="mallory")["reply"]["text"] for n in range(4)]
        assert answers[:3] == ["0 + 1 = 1", "1 + 1 = 2", "2 + 1 = 3"]
        assert answers[3].startswith("You are asking my helpers too often. Please slow down")
        assert ask(system, "hello", user="mallory")["reply"]["text"] == "echo: hello"  # only helper calls count
        assert ask(system, "/calculate 2 + 2", user="bob")["reply"]["text"] == "2 + 2 = 4"
        assert helpers.health("calculator")["calls"] == 4  # mallory's fourth call was never made
    finally:
        helpers.stop()


def test_helpers_register_again_after_redis_is_flushed(
    system: System, helpers: Helpers, clean_redis: RedisServer
) -> None:
    helpers.start("calculator", "examples/helpers/calculator.py:helper")
    helpers.start("converter", "examples/helpers/converter.py:helper")
    clean_redis.client().flushall()
    flushed = time.monotonic()
    wait_until(lambda: {"calculator", "converter"} <= set(helpers.listed()), 10, "both helpers back")
    elapsed = time.monotonic() - flushed
    interval = float(system.env["HELPER_HEARTBEAT_INTERVAL"])
    assert elapsed <= 2 * interval + 1.0, f"took {elapsed:.1f}s"
    print(f"helpers re-registered {elapsed:.2f}s after FLUSHALL (heartbeat interval {interval:g}s)")


def test_registration_and_invocation_refuse_what_is_not_signed_or_well_formed(
    system: System, helpers: Helpers
) -> None:
    calculator = helpers.start("calculator", "examples/helpers/calculator.py:helper")
    url = f"{system.base_url}/v1/helpers"
    manifest = {"name": "sneaky", "url": "http://127.0.0.1:9", "version": "1", "capabilities": []}
    wrong = requests.post(url, json=manifest, headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert wrong.status_code == 401
    malformed = requests.post(url, json=manifest, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert malformed.status_code == 400 and "capabilities" in malformed.json()["fields"]
    invoke = f"http://127.0.0.1:{calculator.port}/invoke/calculate"  # type: ignore[attr-defined]
    body = {"input": {"expression": "1+1"}, "context": {"call_id": "x"}}
    unsigned = requests.post(invoke, json=body, timeout=5)
    forged = requests.post(invoke, json=body, timeout=5, headers={
        "webhook-id": "x", "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    })
    assert unsigned.status_code == forged.status_code == 401


def test_a_helper_packaged_as_its_own_project_installs_and_registers(
    system: System, helpers: Helpers, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, str(ROOT / "helper_sdk"), str(ROOT / "examples" / "helpers" / "wordcount_helper")],
                   check=True, env={**os.environ, "PIP_NO_INPUT": "1"}, timeout=600)
    helpers.start("wordcount", "wordcount_helper:helper", cli=venv / "bin" / "switchboard-helper")
    record = ask(system, "/wordcount the quick brown fox")
    assert "Result of wordcount" in record["reply"]["text"] and '"words": 4' in record["reply"]["text"]


def test_the_real_model_routes_through_its_grammar(make_system: MakeSystem) -> None:
    """llama.cpp on the tiny model: the tool choice is constrained to the schema, so it always parses."""
    system = make_system(HELPER_REGISTRATION_TOKEN=TOKEN, LLM_MAX_TOKENS="48")
    system.start_all()
    helpers = Helpers(system)
    try:
        helpers.start("calculator", "examples/helpers/calculator.py:helper")
        for i in range(5):
            record = ask(system, f"what is {i} plus {i}?", user=f"user{i}")
            assert record["reply"]["text"]
        invalid = [line for line in system.procs["core"].log().splitlines() if "tool choice attempt" in line]
        assert all("finish=length" in line for line in invalid), invalid  # only ever cut off, never malformed
    finally:
        helpers.stop()


def test_a_20000_character_message_with_3_helpers_fits_the_real_models_context(make_system: MakeSystem) -> None:
    """Issue 16: the tool choice sent the whole text and overflowed llama.cpp's context (dead-lettered, and the
    internal error shown publicly); one prompt budget now cuts it for routing as for answering. With the
    converter registered, its ``pattern`` also made a grammar llama.cpp could not parse: any routing crashed the
    worker (SIGSEGV) until ``grammar_schema`` dropped it."""
    system = make_system(HELPER_REGISTRATION_TOKEN=TOKEN, LLM_MAX_TOKENS="16", MAX_TEXT_CHARS="20000")
    system.start_all()
    helpers = Helpers(system)
    try:
        helpers.start("calculator", CALCULATOR)
        helpers.start("converter", CONVERTER)
        helpers.start("fileinfo", "tests.support.helper_apps:helper")
        record = ask(system, "word " * 4000)  # 20,000 characters; the context holds 2,048 tokens
        assert record["reply"]["text"]
        assert "context holds" not in system.procs["core"].log()
    finally:
        helpers.stop()
