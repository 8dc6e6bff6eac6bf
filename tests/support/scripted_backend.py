"""A test backend that decides like a capable model would, for routing tests through real processes.

A random-weight test model cannot choose tools meaningfully, so the tests
that check *where* a message goes use this backend (``LLM_BACKEND=
tests.support.scripted_backend:factory``); registration, queues, the
helper processes, signatures and composing the reply are all real.  A
separate test runs routing through llama.cpp's real grammar on the tiny model.

- asked for a tool choice (``json_schema`` given): ``compute: <expr>`` picks
  ``calculator.calculate``; ``convert <v> <from> to <to>`` picks
  ``converter.convert_units``; otherwise ``none``;
- asked to answer: echoes the last user message (helper results included),
  so a test can see what the model was given.
"""

from __future__ import annotations

import json
import re
from typing import Any

from core_worker.llm import BackendConfig
from tests.support.echo_backend import EchoBackend

SCRIPTED = "tests.support.scripted_backend:factory"  # the LLM_BACKEND that picks this backend


class ScriptedBackend(EchoBackend):
    name = "scripted"

    def answer(self, text: str, *, max_tokens: int | None = None, json_schema: dict[str, Any] | None = None) -> str:
        return self._choose(text, json_schema) if json_schema is not None else super().answer(text)

    @staticmethod
    def _choose(text: str, schema: dict[str, Any]) -> str:
        tools = {option["properties"]["tool"]["const"] for option in schema.get("anyOf", [])}
        if (m := re.search(r"compute:\s*(.+)", text)) and "calculator.calculate" in tools:
            return json.dumps({"tool": "calculator.calculate", "arguments": {"expression": m.group(1).strip()}})
        if (m := re.search(r"convert ([\d.]+) (\w+) to (\w+)", text)) and "converter.convert_units" in tools:
            args = {"value": float(m.group(1)), "from_unit": m.group(2), "to_unit": m.group(3)}
            return json.dumps({"tool": "converter.convert_units", "arguments": args})
        return json.dumps({"tool": "none"})


def factory(config: BackendConfig) -> ScriptedBackend:
    return ScriptedBackend(config)
