from __future__ import annotations

from core_worker.conversation import TRUNCATION_NOTE, build_messages
from core_worker.sessions import Turn


def words(text: str) -> int:
    return len(text.split())


def history(n: int) -> list[Turn]:
    turns = []
    for i in range(n):
        turns += [Turn("user", f"question {i}", f"m{i}"), Turn("assistant", f"answer {i}", f"m{i}")]
    return turns


def test_the_prompt_is_system_then_history_then_the_new_text() -> None:
    messages = build_messages(
        system_prompt="be brief", history=history(2), text="next", count_tokens=words, budget=1000
    ).messages
    assert [(m.role, m.content) for m in messages] == [
        ("system", "be brief"),
        ("user", "question 0"), ("assistant", "answer 0"),
        ("user", "question 1"), ("assistant", "answer 1"),
        ("user", "next"),
    ]


def test_oldest_turns_are_dropped_in_pairs_to_fit_the_budget() -> None:
    # each message costs 2 words + 8 overhead = 10; system 10, new text 9; two pairs need 40
    prompt = build_messages(system_prompt="be brief", history=history(3), text="next", count_tokens=words, budget=60)
    assert prompt.history_ids == ["m1", "m2"]
    messages = prompt.messages
    contents = [m.content for m in messages]
    assert contents == ["be brief", "question 1", "answer 1", "question 2", "answer 2", "next"]


def test_a_text_that_alone_overflows_is_cut_with_a_note() -> None:
    text = " ".join(["word"] * 500)
    messages = build_messages(system_prompt="", history=history(1), text=text, count_tokens=words, budget=100).messages
    assert len(messages) == 1
    assert messages[0].content.endswith(TRUNCATION_NOTE)
    assert words(messages[0].content) + 8 <= 100


def test_a_helper_call_is_folded_into_its_question() -> None:
    call = '{"helper": "calculator", "capability": "calculate", "output": {"text": "4"}, "error": null}'
    turns = [Turn("user", "2+2?", "m0"), Turn("tool", call, "m0"), Turn("assistant", "4", "m0")]
    prompt = build_messages(system_prompt="", history=turns, text="and 3+3?", count_tokens=words, budget=500)
    first = prompt.messages[0].content
    assert [m.role for m in prompt.messages] == ["user", "assistant", "user"]
    assert first.startswith("2+2?") and 'Result of calculator.calculate: {"text": "4"}' in first
