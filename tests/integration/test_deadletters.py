"""Dead-letter inspection and replay with real processes: ``python -m operator_tools.deadletter_cli``.

- a reply its callback refused is delivered again, once, under the same
  ``webhook-id``; a second replay is refused;
- a poison message (the model kept failing) is answered again as a new
  message once the model works; a second replay queues nothing new;
- list, show and purge read and empty the same list ``GET /v1/status`` counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.harness import ROOT, CallbackReceiver, System, wait_until

pytestmark = pytest.mark.integration

MakeSystem = Callable[..., System]


def cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "operator_tools.deadletter_cli", *args], env=system.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def status(system: System) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{system.base_url}/v1/status", timeout=10).json()
    return body


def test_an_undeliverable_reply_is_delivered_again_once(make_system: MakeSystem, callbacks: CallbackReceiver) -> None:
    system = make_system(LLM_BACKEND="tests.support.scripted_backend:factory")
    system.start_all(io_concurrency=2)
    callbacks.status = 400  # a permanent refusal: dead-lettered at once
    message_id = system.post(user="dora", text="first", reply_url=callbacks.url).json()["message_id"]
    wait_until(lambda: status(system)["dead_letters"] == 1, 60, "the dead letter")
    assert system.status(message_id)["delivery"] == "dead"

    listed = cli(system, "list")
    assert listed.returncode == 0 and message_id in listed.stdout and "delivery" in listed.stdout
    shown = json.loads(cli(system, "show", message_id).stdout)
    assert shown["record"]["delivery"] == "dead" and shown["record"]["reply"]["text"] == "echo: first"

    callbacks.status = 200
    replayed = cli(system, "replay", message_id)
    assert replayed.returncode == 0, replayed.stderr
    wait_until(lambda: len(callbacks.for_message(message_id)) == 1, 30, "the replayed delivery")
    assert callbacks.for_message(message_id)[0].body["text"] == "echo: first"
    wait_until(lambda: system.status(message_id).get("delivery") == "delivered", 10, "the delivery recorded")

    again = cli(system, "replay", message_id)
    assert again.returncode == 1 and "delivered" in again.stderr
    # A later reply of the same session goes through the same outbox, after any repeat would have.
    later = system.post(user="dora", text="second", reply_url=callbacks.url).json()["message_id"]
    wait_until(lambda: len(callbacks.for_message(later)) == 1, 30, "the later reply")
    assert len(callbacks.for_message(message_id)) == 1

    purged = cli(system, "purge", "--replayed")
    assert purged.returncode == 0 and "removed 1" in purged.stdout
    assert status(system)["dead_letters"] == 0


def test_a_poison_message_is_answered_again_as_a_new_message_once(
    make_system: MakeSystem, callbacks: CallbackReceiver, tmp_path: Path
) -> None:
    flag = tmp_path / "model-broken"
    flag.write_text("yes")
    system = make_system(LLM_BACKEND="tests.support.failing_backend:factory",
                         FAILING_BACKEND_FLAG=str(flag), MAX_ATTEMPTS="2")
    system.start_all(io_concurrency=2)
    message_id = system.post(user="eve", text="are you there?", reply_url=callbacks.url).json()["message_id"]
    wait_until(lambda: len(callbacks.for_message(message_id)) == 1, 60, "the failure notice")
    assert callbacks.for_message(message_id)[0].body["status"] == "failed"
    assert [e["kind"] for e in status(system)["recent_dead_letters"]] == ["poison"]

    refused = cli(system, "replay", message_id, "--kind", "delivery")
    assert refused.returncode == 1 and "poison" in refused.stderr

    flag.unlink()  # the model is fixed
    replayed = cli(system, "replay", message_id)
    assert replayed.returncode == 0, replayed.stderr
    new_id = replayed.stdout.strip().rsplit(" ", 1)[-1]
    assert new_id != message_id
    wait_until(lambda: len(callbacks.for_message(new_id)) == 1, 30, "the answer to the replayed message")
    answer = callbacks.for_message(new_id)[0].body
    assert answer["status"] == "answered" and answer["text"] == "echo: are you there?"
    assert answer["session_id"] == "api:tests:eve"

    again = cli(system, "replay", message_id)
    assert again.returncode == 0 and "already replayed" in again.stdout and new_id in again.stdout
    later = system.post(user="eve", text="thanks", reply_url=callbacks.url).json()["message_id"]
    wait_until(lambda: len(callbacks.for_message(later)) == 1, 30, "the later reply")
    assert len(callbacks.for_message(new_id)) == 1
    assert len(callbacks.for_message(message_id)) == 1  # the failure notice, never repeated

    assert cli(system, "purge").returncode == 2  # needs --yes
    purged = cli(system, "purge", "--yes")
    assert purged.returncode == 0 and status(system)["dead_letters"] == 0
