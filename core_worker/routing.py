"""Choosing a helper capability for a message: explicitly, by content, or by the model.

Pure functions over the registry's capabilities; no I/O.  Whatever chose
the capability, its arguments are validated against the capability's input
JSON Schema before any call, so text (a mail body, a converted file) can
only reach a helper the routing chose, with arguments of the declared shape.

1. Explicit: ``/<capability> args``, ``/<helper>.<capability> args`` or
   ``@<helper> args`` at the start of what the person typed.  ``args`` is a
   JSON object, or free text that fills the capability's only required
   string field; anything else is left to the model to fill.  A short name
   claimed by two helpers (two capabilities called ``calculator``, or a
   helper and another's capability) reaches neither: only the qualified
   ``/<helper>.<capability>`` does, and the person is told so.  A helper
   that registers a popular name cannot capture what people send to it.
2. By content: the first attachment whose MIME type a capability
   ``accepts`` — when only one helper accepts it; two helpers accepting it
   is the same ambiguity, answered the same way.
3. By the model: the capabilities are described to the LLM, which answers
   ``{"tool": "<helper>.<capability>", "arguments": {...}}`` or
   ``{"tool": "none"}``, constrained to that shape where the backend can.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from redis_stores.helper_registry import Capability
from tasks.schemas import Attachment

__all__ = [
    "NO_TOOL",
    "ExplicitRequest",
    "ToolCall",
    "ambiguity_text",
    "argument_errors",
    "arguments_from_text",
    "attachment_arguments",
    "attachment_candidates",
    "explicit_request",
    "parse_tool_choice",
    "tool_arguments",
    "tool_choice_prompt",
    "tool_choice_schema",
]

NO_TOOL = "none"
_NAME = r"[a-z][a-z0-9_-]{0,31}"
_SLASH = re.compile(rf"^\s*/({_NAME})(?:\.({_NAME}))?(?:\s+(.*))?$", re.S)
_AT = re.compile(rf"^\s*@({_NAME})\b[\s,:]*(.*)$", re.S)


@dataclass(frozen=True)
class ToolCall:
    capability: Capability
    arguments: dict[str, Any]
    via: str  # "explicit" | "attachment" | "model"


@dataclass(frozen=True)
class ExplicitRequest:
    """The person asked for a helper by name; ``candidates`` are the capabilities that match."""

    candidates: tuple[Capability, ...]
    rest: str
    named: str

    @property
    def ambiguous(self) -> bool:
        """The name is claimed by more than one helper: only ``/<helper>.<capability>`` reaches one of them."""
        return _helpers(self.candidates) > 1


def _helpers(capabilities: Sequence[Capability]) -> int:
    return len({c.helper for c in capabilities})


def explicit_request(text: str, capabilities: Sequence[Capability]) -> ExplicitRequest | None:
    if match := _SLASH.match(text):
        first, second, rest = match.group(1), match.group(2), match.group(3) or ""
        if second:
            found = tuple(c for c in capabilities if c.helper == first and c.name == second)
            named = f"{first}.{second}"
        else:
            named_so = tuple(c for c in capabilities if c.name == first)
            of_helper = tuple(c for c in capabilities if c.helper == first and c not in named_so)
            # Within one helper its capability of that name wins; across helpers the name belongs to none.
            found = named_so + of_helper if _helpers(named_so + of_helper) > 1 else named_so or of_helper
            named = first
            if not found and not _near(first, capabilities):
                return None  # "/shrug", "/start": text for the model, not a helper call gone wrong
        return ExplicitRequest(found, rest.strip(), named)
    if match := _AT.match(text):
        helper, rest = match.group(1), match.group(2)
        found = tuple(c for c in capabilities if c.helper == helper)
        return ExplicitRequest(found, rest.strip(), helper) if found else None
    return None


NEAR = 3  # a /word sharing this many leading letters with a command is taken for a mistyped one


def _near(word: str, capabilities: Sequence[Capability]) -> bool:
    """``word`` looks like a helper command: it or a helper's or capability's name is a prefix of the other,
    over at least ``NEAR`` letters (``/calc`` for ``/calculate``, ``/calculates``)."""
    names = {c.name for c in capabilities} | {c.helper for c in capabilities}
    return len(word) >= NEAR and any(name.startswith(word) or word.startswith(name) for name in names)


def arguments_from_text(capability: Capability, rest: str) -> dict[str, Any] | None:
    """Arguments from what followed the command, or None when only the model can fill them."""
    if rest.startswith("{"):
        try:
            value = json.loads(rest)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    schema = capability.input_schema
    properties: dict[str, Any] = schema.get("properties", {})
    strings = [name for name, prop in properties.items() if prop.get("type") == "string"]
    required = list(schema.get("required", []))
    if len(required) == 1 and required[0] in strings:
        return {required[0]: rest}
    if not required and len(strings) == 1:
        return {strings[0]: rest}
    return None


def ambiguity_text(what: str, capabilities: Sequence[Capability]) -> str:
    """What the person is told when two helpers claim ``what``: the qualified commands that reach each."""
    names = ", ".join(f"/{c.qualified}" for c in capabilities)
    return (f"More than one helper answers to {what}, so I used none of them. Say which one you mean: {names} "
            "(send the attachment again with that command if there was one).")


def attachment_candidates(
    attachments: Sequence[Attachment], capabilities: Sequence[Capability]
) -> tuple[Attachment, tuple[Capability, ...]] | None:
    """The first attachment some capability accepts, with every capability that accepts it."""
    for attachment in attachments:
        accepting = tuple(c for c in capabilities if c.accepts_mime(attachment.mime))
        if accepting:
            return attachment, accepting
    return None


def attachment_arguments(capability: Capability, attachment: Attachment) -> dict[str, Any]:
    """The attachment's descriptor, as the fields the capability's input schema knows."""
    descriptor = {"url": attachment.url, "mime": attachment.mime, "name": attachment.name, "size": attachment.size}
    properties = capability.input_schema.get("properties")
    return {k: v for k, v in descriptor.items() if properties is None or k in properties}


def argument_errors(capability: Capability, arguments: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(capability.input_schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(arguments)'}: {error.message}"
        for error in validator.iter_errors(arguments)
    ]


def tool_choice_schema(capabilities: Sequence[Capability]) -> dict[str, Any]:
    """The JSON Schema of the model's answer: one of the tools with its arguments, or none."""
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": c.qualified}, "arguments": c.input_schema},
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for c in capabilities
    ]
    options.append(
        {"type": "object", "properties": {"tool": {"const": NO_TOOL}}, "required": ["tool"],
         "additionalProperties": False}
    )
    return {"anyOf": options}


def tool_choice_prompt(capabilities: Sequence[Capability]) -> str:
    """The tools as a small model reads them cheaply: one line each, its description and its arguments.

    Not the JSON Schemas (816 SmolLM2 tokens for the three example helpers, 309 this way): the answer's shape is
    enforced by the grammar where the backend has one, and validated against the full schema in any case
    (``parse_tool_choice``), so the bounds, patterns and formats are left to them.
    """
    lines = ['If a tool below is needed for the user\'s last message, reply {"tool": "<name>", "arguments": {...}}, '
             'else {"tool": "none"}. JSON only.']
    lines += [f"- {c.qualified}: {c.description} Arguments: {tool_arguments(c.input_schema)}" for c in capabilities]
    return "\n".join(lines)


def tool_arguments(schema: dict[str, Any]) -> str:
    """``value (number, the amount to convert), from_unit (e.g. km), date? (YYYY-MM-DD)``: each property's name,
    ``?`` when it is optional, its type unless a string, its description."""
    required = set(schema.get("required", []))
    properties: dict[str, Any] = schema.get("properties") or {}
    described = []
    for name, prop in properties.items():
        prop = prop if isinstance(prop, dict) else {}
        notes = [note for note in (_type_note(prop), prop.get("description")) if note]
        described.append(f"{name}{'' if name in required else '?'}" + (f" ({', '.join(notes)})" if notes else ""))
    return ", ".join(described) or "none"


def _type_note(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in prop["enum"])
    kind = prop.get("type", "string")
    kinds = [k for k in (kind if isinstance(kind, list) else [kind]) if k != "null"]
    if kinds == ["array"] and isinstance(prop.get("items"), dict) and prop["items"].get("type"):
        return f"array of {prop['items']['type']}"
    return "" if kinds in (["string"], []) else " or ".join(str(k) for k in kinds)


def parse_tool_choice(raw: str, capabilities: Sequence[Capability]) -> ToolCall | None:
    """The model's choice; None for "none"; ValueError (with the reason) when it is not a valid choice."""
    text = raw.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text, strict=False)  # a raw control character inside a string is still data
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict) or not isinstance(value.get("tool"), str):
        raise ValueError('expected an object with a "tool" string')
    if value["tool"] == NO_TOOL:
        return None
    capability = next((c for c in capabilities if c.qualified == value["tool"]), None)
    if capability is None:
        raise ValueError(f"unknown tool {value['tool']!r}")
    arguments = value.get("arguments", {})
    errors = argument_errors(capability, arguments)
    if errors:
        raise ValueError("; ".join(errors))
    return ToolCall(capability, arguments, "model")
