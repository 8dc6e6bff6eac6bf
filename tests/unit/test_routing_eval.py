"""The pure parts of bench/routing_eval.py: its scoring and its short run's choice of messages."""

from __future__ import annotations

import math

import pytest

from bench.routing_eval import CASES, quick_cases, score


def test_the_score_counts_each_kind_of_mistake_next_to_the_always_none_baseline() -> None:
    expected = ["calc", "calc", "units", None, None]
    chosen = ["calc", "units", None, None, "calc"]
    result = score(expected, chosen)
    assert result["correct"] == 2 and result["n"] == 5 and result["accuracy"] == pytest.approx(0.4)
    assert result["baseline_none_accuracy"] == pytest.approx(0.4)  # always "none" is right on the two Nones
    assert result["tool_recall"] == pytest.approx(1 / 3) and result["none_accuracy"] == pytest.approx(0.5)
    assert (result["wrong_tool"], result["missed_tool"], result["needless_call"]) == (1, 1, 1)
    assert score(expected, [None] * 5)["accuracy"] == result["baseline_none_accuracy"]


def test_an_empty_run_scores_nothing_and_mismatched_lists_are_refused() -> None:
    assert math.isnan(score([], [])["accuracy"])
    with pytest.raises(ValueError):
        score(["calc"], [])


def test_the_eval_has_about_30_messages_and_the_quick_run_sees_every_answer() -> None:
    answers = {case.expected for case in CASES}
    assert 28 <= len(CASES) <= 32 and sum(case.expected is None for case in CASES) >= 8
    assert len(answers) == 5  # four capabilities and "none"
    quick = quick_cases(CASES)
    assert {case.expected for case in quick} == answers and len(quick) == 10
    assert len({case.text for case in CASES}) == len(CASES)
