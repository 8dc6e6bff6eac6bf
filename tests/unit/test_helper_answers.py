"""What a helper's HTTP answer means: a result, its refusal of this input, or the helper failing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core_worker.helper_answers import REFUSAL_STATUS, judge, refusal_message

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def answer(status: int, body: Any, *, first_try: bool = True) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return judge(status, raw, SCHEMA, first_try=first_try)


def test_an_output_matching_its_schema_is_the_result() -> None:
    verdict = answer(200, {"output": {"text": "2 + 2 = 4"}})
    assert (verdict.outcome, verdict.output, verdict.error) == ("ok", {"text": "2 + 2 = 4"}, None)


@pytest.mark.parametrize("status", sorted(REFUSAL_STATUS))
def test_the_sdks_error_body_with_a_client_status_is_the_helpers_answer_about_the_input(status: int) -> None:
    verdict = answer(status, {"error": "division by zero"})
    assert (verdict.outcome, verdict.error, verdict.retryable) == ("refused", "division by zero", False)


def test_a_well_formed_result_flagged_as_an_error_is_a_refusal() -> None:
    assert answer(200, {"error": "no such city"}).outcome == "refused"


def test_field_problems_are_part_of_the_message() -> None:
    verdict = answer(422, {"error": "invalid input", "fields": {"expression": ["Shorter than minimum length 1."],
                                                                 "options": {"0": {"digits": ["Not a number."]}}}})
    assert verdict.error == ("invalid input (expression: Shorter than minimum length 1.; "
                             "options.0.digits: Not a number.)")


def test_the_message_is_one_bounded_line_whatever_the_helper_sends() -> None:
    message = refusal_message({"error": "line one\nline two\x1b[31m" + "x" * 1000})
    assert message is not None and "\n" not in message and "\x1b" not in message
    assert message.startswith("line one line two [31m") and len(message) == 300 and message.endswith("…")


@pytest.mark.parametrize("body", [
    b"<html>404 Not Found</html>",  # a proxy in front of the helper, not the helper speaking
    {"error": ""},
    {"error": 3},
    {"message": "nope"},
    {"error": "bad", "fields": ["not", "an", "object"]},
    ["error"],
])
def test_a_client_status_without_a_well_formed_error_body_is_the_helper_failing(body: Any) -> None:
    verdict = answer(404, body)
    assert verdict.outcome == "failed" and verdict.counts and not verdict.retryable


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (502, True), (503, True), (504, True), (429, True),
                                                    (408, True), (405, False), (410, False)])
def test_server_errors_and_other_client_errors_are_failures(status: int, retryable: bool) -> None:
    verdict = answer(status, {"error": "internal error"})
    assert (verdict.outcome, verdict.retryable, verdict.counts) == ("failed", retryable, True)


@pytest.mark.parametrize("status", [401, 403])
def test_a_first_auth_refusal_is_retried_uncounted_and_a_second_counts(status: int) -> None:
    first = answer(status, {"error": "invalid or missing signature"})
    assert (first.outcome, first.retryable, first.counts) == ("failed", True, False)
    again = answer(status, {"error": "invalid or missing signature"}, first_try=False)
    assert (again.outcome, again.retryable, again.counts) == ("failed", False, True)


@pytest.mark.parametrize("body", [b"not json", {"result": {"text": "x"}}, {"output": {"text": 3}}, {"output": "x"}])
def test_malformed_or_schema_invalid_output_is_the_helper_failing(body: Any) -> None:
    verdict = answer(200, body)
    assert verdict.outcome == "failed" and verdict.counts and verdict.error
