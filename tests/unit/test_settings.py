from __future__ import annotations

from pathlib import Path

import pytest

from tasks.settings import SettingsError, load_settings, settings_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_valid() -> None:
    settings = load_settings({})
    assert settings.task_soft_time_limit < settings.task_time_limit < settings.visibility_timeout


def test_values_are_parsed_from_the_environment() -> None:
    settings = load_settings({"PORT": "9000", "LLM_USE_MMAP": "yes", "DELIVERY_TIMEOUT": "2.5"})
    assert (settings.port, settings.llm_use_mmap, settings.delivery_timeout) == (9000, True, 2.5)


def test_a_bad_number_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="PORT"):
        load_settings({"PORT": "eighty"})


def test_time_limits_must_stay_below_the_visibility_timeout() -> None:
    with pytest.raises(SettingsError, match="VISIBILITY_TIMEOUT"):
        load_settings({"VISIBILITY_TIMEOUT": "100"})


def test_session_retry_countdowns_must_stay_below_the_visibility_timeout() -> None:
    """A waiting task's countdown reaches SESSION_LOCK_SECONDS; past the visibility timeout kombu restores it
    while its worker still holds it, and both copies go on retrying (found by the fault suite's review)."""
    limits = {"TASK_SOFT_TIME_LIMIT": "8", "TASK_TIME_LIMIT": "10", "VISIBILITY_TIMEOUT": "12",
              "HELPER_MAX_TIMEOUT": "3", "DELIVERY_BACKOFF_MAX": "2"}
    with pytest.raises(SettingsError, match="SESSION_LOCK_SECONDS"):
        load_settings({**limits, "SESSION_LOCK_SECONDS": "15"})
    assert load_settings({**limits, "SESSION_LOCK_SECONDS": "3"}).session_lock_seconds == 3


def test_secret_must_be_in_whsec_form() -> None:
    with pytest.raises(SettingsError, match="whsec_"):
        load_settings({"SWITCHBOARD_SECRET": "plain"})


def test_configuration_doc_lists_every_setting_and_no_other() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    table = doc.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert table == settings_markdown(), "run `make docs` to regenerate docs/configuration.md"


def test_automatic_threads_leave_a_core_free_for_ctransformers_only() -> None:
    from core_worker.runtime import model_threads

    assert model_threads(load_settings({"LLM_BACKEND": "llama_cpp"}), cores=2) == 2
    assert model_threads(load_settings({"LLM_BACKEND": "ctransformers"}), cores=2) == 1
    assert model_threads(load_settings({"LLM_BACKEND": "ctransformers", "LLM_THREADS": "2"}), cores=2) == 2


def test_automatic_parallel_conversations_are_four_except_for_ctransformers() -> None:
    from core_worker.runtime import backend_config

    for backend, expected in (("llama_cpp", 4), ("openai", 4), ("ctransformers", 1)):
        settings = load_settings({"LLM_BACKEND": backend})
        assert (settings.llm_parallel, settings.parallel_conversations) == (0, expected)
        assert backend_config(settings).parallel == expected
    assert load_settings({"LLM_BACKEND": "openai", "LLM_PARALLEL": "8"}).parallel_conversations == 8
    assert load_settings({"LLM_BACKEND": "ctransformers", "LLM_PARALLEL": "1"}).parallel_conversations == 1


def test_ctransformers_refuses_more_than_one_conversation_at_once() -> None:
    """It has no batched decoding: two conversations would only queue on its one model."""
    with pytest.raises(SettingsError, match="LLM_PARALLEL"):
        load_settings({"LLM_BACKEND": "ctransformers", "LLM_PARALLEL": "2"})


@pytest.mark.parametrize("value", ["65", "-1"])
def test_parallel_conversations_outside_0_to_64_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="LLM_PARALLEL"):
        load_settings({"LLM_PARALLEL": value})
