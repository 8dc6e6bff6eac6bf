"""The calculator example: arithmetic without eval, limits, and a direct reply."""

from __future__ import annotations

import math

import pytest
from helper_sdk.testing import HelperClient

from calculator import MAX_LENGTH, CalculationError, evaluate, helper


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2", 3),
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("-3 ** 2", -9),
        ("2 ^ 10", 1024),
        ("7 // 2", 3),
        ("7 % 3", 1),
        ("7 / 2", 3.5),
        ("sqrt(16) + abs(-2)", 6.0),
        ("round(pi, 2)", 3.14),
        ("log(8, 2)", 3.0),
        ("factorial(5)", 120),
        ("+-+1", -1),
    ],
)
def test_arithmetic_is_evaluated(expression: str, value: float) -> None:
    assert evaluate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os').system('true')", "unknown name"),
        ("(1).__class__", "not arithmetic"),
        ("'a' * 3", "not arithmetic"),
        ("[1, 2]", "not arithmetic"),
        ("x + 1", "unknown name"),
        ("1 / 0", "division by zero"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 400", "too large"),
        ("factorial(1000)", "too large"),
        ("exp(1000)", "too large"),
        ("sqrt(-1)", "not defined"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 +", "not an arithmetic expression"),
        ("sqrt(1, 2)", "takes 1 argument"),
        ("+".join(["1"] * 60), "too complicated"),
    ],
)
def test_anything_else_is_refused_with_a_reason(expression: str, reason: str) -> None:
    with pytest.raises(CalculationError, match=reason):
        evaluate(expression)


def test_huge_exponents_are_refused_before_computing() -> None:
    with pytest.raises(CalculationError, match="too large"):
        evaluate("2 ** 100000000")


def test_the_person_gets_the_result_directly() -> None:
    response = HelperClient(helper).invoke("calculate", {"expression": "2 + 3 * 4"})
    assert response.status_code == 200
    assert response.json == {"output": {"text": "2 + 3 * 4 = 14", "value": 14.0}}
    (capability,) = helper.manifest("http://127.0.0.1:8101")["capabilities"]
    assert capability["reply"] == "direct"


def test_a_bad_expression_is_a_422_with_the_reason() -> None:
    response = HelperClient(helper).invoke("calculate", {"expression": "1/0"})
    assert response.status_code == 422
    assert response.json == {"error": "division by zero"}


def test_an_overlong_expression_is_invalid_input() -> None:
    response = HelperClient(helper).invoke("calculate", {"expression": "1" * (MAX_LENGTH + 1)})
    assert response.status_code == 422
    assert "expression" in response.json["fields"]


def test_results_read_naturally() -> None:
    client = HelperClient(helper)
    assert client.invoke("calculate", {"expression": "10 / 4"}).json["output"]["text"] == "10 / 4 = 2.5"
    assert client.invoke("calculate", {"expression": "1 / 3"}).json["output"]["text"] == "1 / 3 = 0.333333333333"
    assert client.invoke("calculate", {"expression": "pi"}).json["output"]["value"] == pytest.approx(math.pi)
