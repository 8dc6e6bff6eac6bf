"""The schema llama.cpp turns into a grammar drops what its converter mistranslates (a ``\\d`` pattern gave an
unparseable grammar and a SIGSEGV while sampling); property names that happen to be keywords are kept."""

from __future__ import annotations

from typing import Any

from core_worker.llm.llama_cpp_backend import GRAMMAR_MAX_REPEAT, grammar_schema


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


def test_bounds_too_big_for_a_grammar_are_dropped_small_ones_and_property_names_kept() -> None:
    # wordcount's maxLength of 1,000,000: llama.cpp refused the grammar and crashed the process while parsing it
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": 1_000_000},
            "tags": {"type": "array", "maxItems": GRAMMAR_MAX_REPEAT + 1, "items": {"type": "string", "maxLength": 32}},
            "maxLength": {"type": "integer"},  # a property named like the keyword
        },
    }
    assert grammar_schema(schema) == {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 32}},
            "maxLength": {"type": "integer"},
        },
    }
    assert grammar_schema({"type": "string", "maxLength": GRAMMAR_MAX_REPEAT}) == {
        "type": "string", "maxLength": GRAMMAR_MAX_REPEAT}
