"""What one capability is: its handler, its schemas, and how it presents itself in the manifest."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import ManifestError
from ._schemas import SchemaAdapter, adapt
from .manifest import SCHEMA, capability_problems, pattern

__all__ = ["NAME_PATTERN", "Capability", "Handler", "InvocationContext", "Reply", "check_name", "declare"]

# The manifest schema's own values (helper_sdk/manifest.schema.json), so a declaration is held to the core's rules.
NAME_PATTERN = pattern("name")
_MIME_PATTERN = pattern("mime")  # text/plain, image/*
_CAPABILITY = SCHEMA["$defs"]["capability"]["properties"]
MAX_DESCRIPTION = int(_CAPABILITY["description"]["maxLength"])
MIN_TIMEOUT = float(_CAPABILITY["timeout"]["minimum"])

Reply = Literal["model", "direct"]


@dataclass(frozen=True)
class InvocationContext:
    """Where a call comes from. ``call_id`` is the idempotency key: the core may deliver the same call twice."""

    call_id: str
    capability: str
    message_id: str = ""
    session_id: str = ""
    channel: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)  # the whole context object, for fields added later


Handler = Callable[[Any, InvocationContext], Mapping[str, Any]]


@dataclass(frozen=True)
class Capability:
    """A declared capability; built by ``Helper.capability``, read by the WSGI app and the manifest."""

    name: str
    description: str
    handler: Handler
    input: SchemaAdapter
    output: SchemaAdapter
    accepts: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()
    reply: Reply = "model"
    timeout: float | None = None

    def manifest(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input.json_schema,
            "output_schema": self.output.json_schema,
            "accepts": list(self.accepts),
            "produces": list(self.produces),
            "reply": self.reply,
        }
        if self.timeout is not None:
            entry["timeout"] = self.timeout
        return entry


def check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.search(name):
        raise ManifestError(f"{what} {name!r}: {SCHEMA['$defs']['name']['x-message']}")
    return name


def declare(
    handler: Handler,
    *,
    name: str | None,
    description: str | None,
    input_schema: Any,
    output_schema: Any,
    accepts: Iterable[str],
    produces: Iterable[str],
    reply: str,
    timeout: float | None = None,
) -> Capability:
    """Check everything the core would check, so a bad declaration fails at import time, not at registration."""
    cap_name = check_name(name if name is not None else getattr(handler, "__name__", None), "capability name")
    text = description if description is not None else inspect.getdoc(handler) or ""
    text = text.strip()
    if not text:
        raise ManifestError(f"capability {cap_name!r} needs a description (argument or docstring): the model reads it")
    if len(text) > MAX_DESCRIPTION:
        raise ManifestError(f"capability {cap_name!r}: the description is longer than {MAX_DESCRIPTION} characters")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise ManifestError(f"capability {cap_name!r}: timeout must be a number of seconds")
    if timeout is not None and timeout < MIN_TIMEOUT:
        raise ManifestError(f"capability {cap_name!r}: timeout must be at least {MIN_TIMEOUT} seconds")
    if reply not in ("model", "direct"):
        raise ManifestError(f"capability {cap_name!r}: reply must be 'model' or 'direct', not {reply!r}")
    _check_handler(handler, cap_name)
    input_adapter = adapt(input_schema, where=f"{cap_name}.input_schema")
    output_adapter = adapt(output_schema, where=f"{cap_name}.output_schema")
    if reply == "direct" and not _has_text(output_adapter.json_schema):
        raise ManifestError(
            f"capability {cap_name!r} replies directly, so its output schema needs a required string property 'text'"
        )
    capability = Capability(
        name=cap_name,
        description=text,
        handler=handler,
        input=input_adapter,
        output=output_adapter,
        accepts=_mime_types(accepts, cap_name, "accepts"),
        produces=_mime_types(produces, cap_name, "produces"),
        reply="direct" if reply == "direct" else "model",
        timeout=float(timeout) if timeout is not None else None,
    )
    problems = capability_problems(capability.manifest())  # whatever the checks above do not name
    if problems:
        raise ManifestError(f"capability {cap_name!r}: the core would refuse it: {problems}")
    return capability


def _check_handler(handler: Handler, name: str) -> None:
    if not callable(handler):
        raise ManifestError(f"capability {name!r}: the handler is not callable")
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise ManifestError(f"capability {name!r}: the handler must accept (data, context)") from None


def _has_text(schema: Mapping[str, Any]) -> bool:
    text = schema.get("properties", {}).get("text")
    return isinstance(text, Mapping) and text.get("type") == "string" and "text" in schema.get("required", [])


def _mime_types(values: Iterable[str], name: str, what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ManifestError(f"capability {name!r}: {what} must be a list of MIME types, not a string")
    out = []
    for value in values:
        mime = value.strip().lower() if isinstance(value, str) else value
        if not isinstance(mime, str) or not _MIME_PATTERN.search(mime):
            raise ManifestError(
                f"capability {name!r}: {what} entry {value!r} is not a MIME type like text/plain or image/*"
            )
        out.append(mime)
    return tuple(out)
