"""The helper manifest's rules, written once: ``manifest.schema.json`` and the few a JSON Schema cannot say.

The core's registry (``POST /v1/helpers``), ``helper_sdk.testing.FakeCore`` and the SDK's own declarations
all call ``manifest_problems``, so a manifest the fake accepts is one the core accepts.  Problems come back
as marshmallow-style field errors, ready for JSON: ``{"capabilities": {"0": {"reply": ["must be 'model' or
'direct'"]}}}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jsonschema

__all__ = ["SCHEMA", "capability_problems", "manifest_problems", "normalized", "pattern"]

SCHEMA: dict[str, Any] = json.loads(resources.files(__package__).joinpath("manifest.schema.json").read_text("utf-8"))
MISSING = "Missing data for required field."
Problems = dict[Any, Any]


def pattern(name: str) -> re.Pattern[str]:
    """A ``$defs`` pattern of the schema (``name``, ``mime``), compiled as the validator compiles it."""
    return re.compile(SCHEMA["$defs"][name]["pattern"])


@cache
def _validator() -> jsonschema.protocols.Validator:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    return jsonschema.Draft202012Validator(SCHEMA)


def manifest_problems(body: Any, *, wildcard_accepts: bool = False) -> Problems:
    """What the core refuses in a registration body; empty when it is acceptable.

    ``accepts`` lists concrete types unless the operator allows patterns (HELPER_WILDCARD_ACCEPTS): a helper
    accepting ``image/*`` would be handed every such upload of every person.
    """
    problems: Problems = {}
    for error in _validator().iter_errors(body):
        for path, message in _explain(error):
            _add(problems, path, message)
    if not isinstance(body, dict):
        return _json_keys(problems)
    url = body.get("url")
    if isinstance(url, str) and "url" not in problems and not _has_host(url):
        _add(problems, ["url"], "must be an http(s) URL")
    capabilities = body.get("capabilities")
    if isinstance(capabilities, list):
        seen: set[str] = set()
        for index, capability in enumerate(capabilities):
            for path, message in _capability_rules(capability, seen, wildcard_accepts):
                _add(problems, ["capabilities", index, *path], message)
    return _json_keys(problems)


def capability_problems(capability: dict[str, Any], *, wildcard_accepts: bool = True) -> Problems:
    """The problems of one capability entry alone (the SDK checks each declaration with this)."""
    body = {"name": "probe", "url": "http://probe", "version": "1", "capabilities": [capability]}
    found = manifest_problems(body, wildcard_accepts=wildcard_accepts).get("capabilities", {})
    return dict(found.get("0", {})) if isinstance(found, dict) else {"_schema": list(found)}


def normalized(manifest: dict[str, Any]) -> dict[str, Any]:
    """A valid manifest with the schema's fields only and every default filled in (what the registry stores)."""
    capabilities = [
        {
            "name": c["name"], "description": c["description"], "input_schema": c["input_schema"],
            "output_schema": c["output_schema"], "accepts": list(c.get("accepts") or []),
            "produces": list(c.get("produces") or []), "reply": c.get("reply", "model"),
            "timeout": c.get("timeout"),
        }
        for c in manifest["capabilities"]
    ]
    return {"name": manifest["name"], "url": manifest["url"], "version": manifest["version"],
            "description": manifest.get("description", ""), "capabilities": capabilities}


def _capability_rules(capability: Any, seen: set[str], wildcard_accepts: bool) -> Iterable[tuple[list[Any], str]]:
    """The rules a JSON Schema cannot state: unique names, valid nested schemas, the wildcard setting."""
    if not isinstance(capability, dict):
        return
    name = capability.get("name")
    if isinstance(name, str):
        if name in seen:
            yield ["name"], "capability names must be unique"
        seen.add(name)
    for key in ("input_schema", "output_schema"):
        schema = capability.get(key)
        if isinstance(schema, dict):
            validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            try:
                validator.check_schema(schema)
            except jsonschema.SchemaError as exc:
                yield [key], f"not a valid JSON Schema: {exc.message}"
    accepts = capability.get("accepts")
    if not wildcard_accepts and isinstance(accepts, list):
        for mime in accepts:
            if isinstance(mime, str) and "*" in mime:
                yield ["accepts"], (f"{mime!r} is a pattern: list concrete types (HELPER_WILDCARD_ACCEPTS allows "
                                    "patterns)")


def _has_host(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # a bad port raises
    except ValueError:
        return False
    return bool(parts.hostname)


def _explain(error: jsonschema.ValidationError) -> Iterable[tuple[list[Any], str]]:
    """Where an error belongs and what it says: the nearest ``x-message`` on the way to the failed keyword.

    A ``required`` that a field's own schema states names each missing field; one nested inside a rule
    (the direct-reply check) reports that rule's message on the field it guards.
    """
    path = list(error.absolute_path)
    steps = list(error.absolute_schema_path)[:-1]  # the last step is the failed keyword itself
    node: Any = SCHEMA
    level, i = 0, 0
    message, depth, whole = error.message, len(path), False
    rule: tuple[str, int] | None = None
    if "x-message" in node:
        message, depth, whole = node["x-message"], 0, True
    while i < len(steps):
        step = steps[i]
        if step == "$ref":
            i += 1
        elif step == "properties":
            node, level, i = node[step][steps[i + 1]], level + 1, i + 2
        elif step == "items":
            node, level, i = node[step], level + 1, i + 1
        elif step in ("if", "then", "else", "not"):
            node, i = node[step], i + 1
        elif step in ("allOf", "anyOf", "oneOf"):
            node, i = node[step][steps[i + 1]], i + 2
        else:
            break
        while "$ref" in node:  # the validator's path steps through a reference without naming it
            if "x-message" in node:
                message, depth = node["x-message"], level
            node = _resolve(node["$ref"])
        if "x-message" in node:
            message, depth, whole = node["x-message"], level, node.get("type") == "object"
        if "x-rule" in node and rule is None:
            rule = node["x-rule"], level
    if rule is not None:
        yield path[: rule[1]], rule[0]
        return
    own = "x-message" in node and level == len(path)
    if error.validator == "required" and own and isinstance(error.instance, dict):
        for field in error.validator_value:
            if field not in error.instance:
                yield [*path, field], MISSING
        return
    item = not path or isinstance(path[-1], int)  # a whole object of a list (or the body): marshmallow's _schema
    yield [*path, "_schema"] if whole and item and depth == len(path) else path[:depth], message


def _resolve(ref: str) -> Any:
    node: Any = SCHEMA
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _add(problems: Problems, path: list[Any], message: str) -> None:
    """Put ``message`` at ``path`` in marshmallow's shape (a list per field, ``_schema`` for a whole object)."""
    if not path:
        path = ["_schema"]
    node = problems
    for key in path[:-1]:
        child = node.get(key)
        if isinstance(child, list):
            child = node[key] = {"_schema": child}
        node = node.setdefault(key, {}) if child is None else child
    last = path[-1]
    current = node.get(last)
    if isinstance(current, dict):
        current = current.setdefault("_schema", [])
    elif current is None:
        current = node[last] = []
    if message not in current:
        current.append(message)


def _json_keys(problems: Problems) -> Problems:
    """List indexes as strings, as JSON has them (and so that sorting the keys never compares 0 with "_schema")."""
    return {str(k): _json_keys(v) if isinstance(v, dict) else v for k, v in problems.items()}
