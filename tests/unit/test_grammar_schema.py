"""The schema llama.cpp turns into a grammar drops what its converter mistranslates (a ``\\d`` pattern gave an
unparseable grammar and a SIGSEGV while sampling); property names that happen to be keywords are kept."""

from __future__ import annotations

from typing import Any

from core_worker.llm.llama_cpp_backend import grammar_schema


def test_patterns_and_formats_are_dropped_lengths_and_names_kept() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "format": "date"},
            "pattern": {"type": "string", "minLength": 1, "maxLength": 32},  # a property named like the keyword
            "nested": {"anyOf": [{"type": "string", "pattern": "x+"}, {"type": "null"}]},
        },
        "patternProperties": {"^x-": {"type": "string"}},
        "required": ["date"],
    }
    assert grammar_schema(schema) == {
        "type": "object",
        "properties": {
            "date": {"type": "string"},
            "pattern": {"type": "string", "minLength": 1, "maxLength": 32},
            "nested": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["date"],
    }
    assert schema["properties"]["date"]["pattern"]  # the helper's own schema is left whole for validation
