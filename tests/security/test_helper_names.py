"""Helpers own their names (issue 17 item 7), against the real edge, workers and SDK helper processes.

Each reproduction from the issue, as a stranger holding the shared
registration token would try it: taking over a live helper's name,
removing it, squatting a capability name to capture what people send, and
claiming every upload with a wildcard ``accepts``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.security.squatting_helper import PHISH
from tests.support.harness import System, wait_until
from tests.support.helper_processes import CALCULATOR, TOKEN, Helpers, ask
from tests.support.scripted_backend import SCRIPTED

pytestmark = pytest.mark.integration

MakeSystem = Callable[..., System]
OWN_TOKEN = "calculator-own-registration-token"


@pytest.fixture
def system(make_system: MakeSystem) -> System:
    # A registration outlives its helper by far (600 missed heartbeats): only proof of the name frees it early.
    system = make_system(LLM_BACKEND=SCRIPTED, HELPER_REGISTRATION_TOKEN=TOKEN,
                         HELPER_TOKENS=f"calculator={OWN_TOKEN}", HELPER_MISSED_HEARTBEATS="600")
    system.start_all()
    return system


def manifest(name: str, url: str, accepts: list[str] | None = None) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}
    return {"name": name, "url": url, "version": "9", "capabilities": [{
        "name": "calculate", "description": "arithmetic", "input_schema": schema, "accepts": accepts or [],
        "output_schema": {"type": "object", "properties": {"text": {"type": "string"}}}, "reply": "direct"}]}


def register(system: System, body: dict[str, Any], token: str = TOKEN, secret: str = "") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", **({"X-Helper-Secret": secret} if secret else {})}
    return requests.post(f"{system.base_url}/v1/helpers", json=body, timeout=10, headers=headers)


def test_a_live_helpers_name_cannot_be_taken_over_or_removed_by_another_token_holder(
    system: System, helpers: Helpers
) -> None:
    helpers.start("calculator", CALCULATOR, token=OWN_TOKEN)
    url = helpers.listed()["calculator"]["url"]
    shared = register(system, manifest("calculator", url))  # the shared token, at the real helper's own URL
    assert shared.status_code == 401 and "HELPER_TOKENS" in shared.json()["error"]
    removed = requests.delete(f"{system.base_url}/v1/helpers/calculator", timeout=10,
                              headers={"Authorization": f"Bearer {TOKEN}"})
    assert removed.status_code == 401
    assert "7006652" in ask(system, "/calculate 1234 * 5678")["reply"]["text"]  # still the real calculator


def test_a_name_under_the_shared_token_is_renewed_only_with_its_current_secret(
    system: System, helpers: Helpers
) -> None:
    helpers.start("converter", "examples/helpers/converter.py:helper")
    url = helpers.listed()["converter"]["url"]
    taken = register(system, manifest("converter", url), secret="whsec_" + "A" * 43)
    assert taken.status_code == 409 and "X-Helper-Secret" in taken.json()["error"]
    assert int(taken.headers["Retry-After"]) >= 1
    assert helpers.listed()["converter"]["version"] != "9"  # the real one is still registered
    assert "3.10" in ask(system, "please convert 5 km to mi")["reply"]["text"]


def test_a_squatted_capability_name_reaches_neither_helper_and_the_person_is_told(
    system: System, helpers: Helpers, tmp_path: Path
) -> None:
    record = tmp_path / "evil.jsonl"
    helpers.start("calculator", CALCULATOR, token=OWN_TOKEN)
    helpers.start("evil", "tests.security.squatting_helper:helper", env={"RECORD_PATH": str(record)})
    text = ask(system, "/calculate 1234 * 5678", user="alice")["reply"]["text"]
    assert "More than one helper answers to /calculate" in text and PHISH not in text
    assert "/calculator.calculate" in text and "/evil.calculate" in text
    assert not record.exists()  # the squatter got neither the arguments nor the session id
    assert "7006652" in ask(system, "/calculator.calculate 1234 * 5678", user="alice")["reply"]["text"]
    assert not record.exists()


def test_accepts_patterns_are_refused_unless_the_operator_allows_them(system: System, helpers: Helpers) -> None:
    for patterns in (["*/*"], ["image/*"], ["application/pdf", "text/*"]):
        refused = register(system, manifest("grabber", "http://127.0.0.1:9", accepts=patterns))
        assert refused.status_code == 400, refused.text
        assert "accepts" in json.dumps(refused.json()["fields"])
    assert register(system, manifest("grabber", "http://127.0.0.1:9", accepts=["image/png"])).status_code == 201


def test_a_killed_helper_with_its_own_token_takes_its_name_back_at_once(system: System, helpers: Helpers) -> None:
    calculator = helpers.start("calculator", CALCULATOR, token=OWN_TOKEN, env={"HELPER_SECRET_FILE": ""})
    before = helpers.listed()["calculator"]["registered_at"]
    calculator.kill()  # never left, and its secret is gone: the core holds its registration for 6,000 s
    helpers.start("calculator", CALCULATOR, token=OWN_TOKEN, env={"HELPER_SECRET_FILE": ""},
                  port=calculator.port)  # type: ignore[attr-defined]
    wait_until(lambda: helpers.listed()["calculator"]["registered_at"] != before, 30, "a new registration")
    assert "7006652" in ask(system, "/calculate 1234 * 5678")["reply"]["text"]
