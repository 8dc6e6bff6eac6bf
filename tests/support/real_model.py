"""Support for the real-model tests (``-m model``): the system's settings for SmolLM2-135M-Instruct at temperature 0,
the prompts the core worker logged (``LLM_LOG_PROMPTS``), and a streamed message read partial by partial."""

from __future__ import annotations

import json
from typing import Any

import requests

from core_worker.llm_metrics import PROMPT_LOG_PREFIX
from tests.support.factories import AUTH
from tests.support.harness import System

__all__ = ["MAX_TOKENS", "REAL_MODEL_ENV", "logged_prompts", "stream"]

MAX_TOKENS = 200
REAL_MODEL_ENV = {
    "LLM_BACKEND": "llama_cpp",
    "LLM_TEMPERATURE": "0",
    "LLM_MAX_TOKENS": str(MAX_TOKENS),
    "LLM_CONTEXT": "2048",
    "LLM_THREADS": "1",
    "LLM_LOG_PROMPTS": "true",
    "LOG_FORMAT": "json",
    "WORKER_HEARTBEAT_INTERVAL": "0.5",
    "STREAM_INTERVAL_SECONDS": "0.05",
    # a real model on a shared 2-core machine: far more room than its few seconds of work need
    "TASK_SOFT_TIME_LIMIT": "90",
    "TASK_TIME_LIMIT": "100",
    "VISIBILITY_TIMEOUT": "120",
    "SESSION_LOCK_SECONDS": "20",
}


def logged_prompts(system: System) -> list[str]:
    """Every prompt the core worker's model received so far, rendered, oldest first."""
    prompts = []
    for line in system.procs["core"].log().splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("logger") == "core_worker.prompts" and entry["message"].startswith(PROMPT_LOG_PREFIX):
            prompts.append(json.loads(entry["message"][len(PROMPT_LOG_PREFIX):]))
    return prompts


def stream(system: System, text: str, user: str) -> tuple[list[str], dict[str, Any]]:
    """Post ``text`` with ``stream=true`` and long-poll it: the partial texts shown, in order, and the final record."""
    accepted = system.post(user=user, text=text, stream=True)
    assert accepted.status_code == 202, accepted.text
    message_id = accepted.json()["message_id"]
    partials: list[str] = []
    seq = 0
    while True:
        response = requests.get(f"{system.base_url}/v1/messages/{message_id}", params={"wait": 20, "partial": seq},
                                headers=AUTH, timeout=30)
        response.raise_for_status()
        record: dict[str, Any] = response.json()
        if record["status"] in ("answered", "failed"):
            assert record["status"] == "answered", system.logs()
            return partials, record
        if "partial" in record:
            seq = record["partial"]["seq"]
            partials.append(record["partial"]["text"])
