"""Input and output schemas: marshmallow or JSON Schema in, one JSON Schema out for the manifest.

A capability's schema may be a marshmallow ``Schema`` (class or instance) or
a JSON Schema (draft 2020-12) dict. Either way the core receives JSON Schema
in the manifest, and the SDK validates each call the same way the author
wrote it: marshmallow schemas with marshmallow (so ``post_load`` and custom
validators still run), dicts with the small validator below.

The validator covers the keywords helpers need (type, properties, required,
additionalProperties, items, enum, const, bounds, lengths, pattern) and a
schema using any other keyword is refused when it is declared: a rule the
SDK would silently skip is worse than none. Use marshmallow for the rest.
Field errors have marshmallow's shape (``{"field": ["message"]}``) either way.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

__all__ = ["DRAFT", "InvalidData", "SchemaAdapter", "adapt", "marshmallow_to_json_schema", "validate_json"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"

_ErrorTree = list[str] | dict[Any, Any]

# fmt: off
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "format", "deprecated",
     "readOnly", "writeOnly", "contentMediaType", "contentEncoding"}
)
_VALIDATING = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "enum", "const", "minimum", "maximum",
     "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems",
     "minProperties", "maxProperties"}
)
# fmt: on
_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})


class InvalidData(Exception):
    """Data does not match a schema; ``fields`` says where, marshmallow style."""

    def __init__(self, fields: Mapping[Any, Any]) -> None:
        super().__init__("invalid data")
        self.fields: dict[str, Any] = _string_keys(fields)


def _string_keys(tree: Mapping[Any, Any]) -> dict[str, Any]:
    """List indexes become "0", "1"… as JSON would make them anyway (and mixed keys could not be sorted)."""
    return {str(key): _string_keys(value) if isinstance(value, Mapping) else value for key, value in tree.items()}


class SchemaAdapter(ABC):
    """One schema, whatever it was written in: its JSON Schema, and how to check data against it."""

    json_schema: dict[str, Any]

    @abstractmethod
    def load(self, data: Any) -> Any:
        """Validate call input; return what the capability receives. Raises InvalidData."""

    @abstractmethod
    def dump(self, data: Any) -> Any:
        """Validate capability output; return what goes on the wire. Raises InvalidData."""


class _MarshmallowAdapter(SchemaAdapter):
    def __init__(self, schema: ma.Schema) -> None:
        self.schema = schema
        self.json_schema = marshmallow_to_json_schema(schema)

    def load(self, data: Any) -> Any:
        try:
            return self.schema.load(data)
        except ma.ValidationError as error:
            raise InvalidData(_as_tree(error.messages)) from None

    def dump(self, data: Any) -> Any:
        # Loading checks the output exactly as the JSON Schema describes it; dumping turns
        # what was loaded (datetimes, post_load objects) back into plain JSON values.
        return self.schema.dump(self.load(data))


class _JSONAdapter(SchemaAdapter):
    def __init__(self, schema: dict[str, Any]) -> None:
        self.json_schema = schema

    def load(self, data: Any) -> Any:
        errors = validate_json(self.json_schema, data)
        if errors:
            raise InvalidData(errors)
        return data

    dump = load


def adapt(schema: Any, *, where: str) -> SchemaAdapter:
    """Wrap a marshmallow schema (class or instance) or a JSON Schema dict; ManifestError if it is neither."""
    from ._errors import ManifestError

    if isinstance(schema, type) and issubclass(schema, ma.Schema):
        schema = schema()
    if isinstance(schema, ma.Schema):
        if schema.many:
            raise ManifestError(f"{where}: the schema must describe one JSON object, not many=True")
        return _MarshmallowAdapter(schema)
    if isinstance(schema, Mapping):
        document = dict(schema)
        try:
            json.dumps(document, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ManifestError(f"{where}: the JSON Schema is not plain JSON ({error})") from None
        problems = _check_schema(document, where)
        if problems:
            raise ManifestError("; ".join(problems))
        if document.get("type") != "object":
            raise ManifestError(f'{where}: the top-level schema must have "type": "object"')
        return _JSONAdapter(document)
    raise ManifestError(f"{where}: expected a marshmallow Schema or a JSON Schema dict, got {type(schema).__name__}")


def _as_tree(messages: Any) -> dict[Any, Any]:
    return dict(messages) if isinstance(messages, Mapping) else {"_schema": list(messages)}


# --- marshmallow -> JSON Schema ---------------------------------------------------------------


def marshmallow_to_json_schema(schema: ma.Schema) -> dict[str, Any]:
    """The JSON Schema of what ``schema.load`` accepts (keys are data keys; dump-only fields left out)."""
    return {"$schema": DRAFT, **_object_schema(schema, ())}


def _object_schema(schema: ma.Schema, seen: tuple[type, ...]) -> dict[str, Any]:
    cls = type(schema)
    if cls in seen:  # a schema nesting itself: stop describing, the marshmallow load still validates
        return {"type": "object"}
    seen = (*seen, cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for attr, field in schema.load_fields.items():
        key = field.data_key or attr
        properties[key] = _field_schema(field, seen)
        if field.required:
            required.append(key)
    out: dict[str, Any] = {"type": "object", "title": cls.__name__, "properties": properties}
    if required:
        out["required"] = required
    if schema.unknown == ma.RAISE:
        out["additionalProperties"] = False
    return out


def _field_schema(field: fields.Field, seen: tuple[type, ...]) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(field, fields.Pluck):
        out = {}
    elif isinstance(field, fields.Nested):
        inner = _object_schema(field.schema, seen)
        out = {"type": "array", "items": inner} if field.many else inner
    elif isinstance(field, fields.List):
        out = {"type": "array", "items": _field_schema(field.inner, seen)}
    elif isinstance(field, fields.Tuple):
        items = [_field_schema(f, seen) for f in field.tuple_fields]
        out = {"type": "array", "prefixItems": items, "items": False, "minItems": len(items)}
    elif isinstance(field, fields.Mapping):
        out = {"type": "object"}
        if field.value_field is not None:
            out["additionalProperties"] = _field_schema(field.value_field, seen)
    elif isinstance(field, fields.Boolean):
        out = {"type": "boolean"}
    elif isinstance(field, fields.Integer):
        out = {"type": "integer"}
    elif isinstance(field, fields.Number | fields.TimeDelta):
        out = {"type": "number"}
    elif isinstance(field, fields.Date):
        out = {"type": "string", "format": "date"}
    elif isinstance(field, fields.Time):
        out = {"type": "string", "format": "time"}
    elif isinstance(field, fields.DateTime):
        out = {"type": "string", "format": "date-time"}
    elif isinstance(field, fields.UUID):
        out = {"type": "string", "format": "uuid"}
    elif isinstance(field, fields.Email):
        out = {"type": "string", "format": "email"}
    elif isinstance(field, fields.URL):
        out = {"type": "string", "format": "uri"}
    elif isinstance(field, fields.Enum):
        out = {"enum": [m.value if field.by_value else m.name for m in field.enum]}
    elif isinstance(field, fields.Constant):
        out = {"const": field.constant}
    elif isinstance(field, fields.String | fields.IP):
        out = {"type": "string"}
    else:  # Raw, Method, Function, custom fields: anything goes, marshmallow still validates
        out = {}
    for validator in field.validators:
        _apply_validator(out, validator)
    if field.allow_none:
        _allow_null(out)
    for key in ("title", "description", "examples"):
        if key in field.metadata:
            out[key] = field.metadata[key]
    default = field.load_default
    if default is not ma.missing and not callable(default) and _is_json(default):
        out["default"] = default
    return out


def _apply_validator(out: dict[str, Any], validator: Any) -> None:
    if isinstance(validator, validate.OneOf):
        out["enum"] = list(validator.choices)
    elif isinstance(validator, validate.Equal):
        out["const"] = validator.comparable
    elif isinstance(validator, validate.Range):
        if validator.min is not None:
            out["minimum" if getattr(validator, "min_inclusive", True) else "exclusiveMinimum"] = validator.min
        if validator.max is not None:
            out["maximum" if getattr(validator, "max_inclusive", True) else "exclusiveMaximum"] = validator.max
    elif isinstance(validator, validate.Length):
        kind = out.get("type")
        low, high = ("minItems", "maxItems") if kind == "array" else ("minLength", "maxLength")
        if kind == "object":
            low, high = "minProperties", "maxProperties"
        lowest = validator.equal if validator.equal is not None else validator.min
        highest = validator.equal if validator.equal is not None else validator.max
        if lowest is not None:
            out[low] = lowest
        if highest is not None:
            out[high] = highest
    elif isinstance(validator, validate.Regexp):
        out["pattern"] = validator.regex.pattern


def _allow_null(out: dict[str, Any]) -> None:
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    if "const" in out or ("type" not in out and "enum" not in out and out):
        inner = dict(out)
        out.clear()
        out["anyOf"] = [inner, {"type": "null"}]


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


# --- JSON Schema: checking the schema, validating data --------------------------------------


def _check_schema(schema: Any, where: str) -> list[str]:
    if isinstance(schema, bool):
        return []
    if not isinstance(schema, Mapping):
        return [f"{where}: a schema must be an object or a boolean"]
    problems: list[str] = []
    for key in schema:
        if key not in _VALIDATING and key not in _ANNOTATIONS and not str(key).startswith("x-"):
            problems.append(
                f"{where}: unsupported JSON Schema keyword {key!r} (the SDK validates only "
                f"{', '.join(sorted(_VALIDATING))}; use a marshmallow schema for more)"
            )
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    if any(k not in _TYPES for k in kinds):
        problems.append(f"{where}: unknown type {kind!r}")
    for key in ("properties",):
        if key in schema:
            props = schema[key]
            if not isinstance(props, Mapping):
                problems.append(f"{where}: properties must be an object")
            else:
                for name, sub in props.items():
                    problems += _check_schema(sub, f"{where}.properties.{name}")
    for key in ("items", "additionalProperties"):
        if key in schema:
            problems += _check_schema(schema[key], f"{where}.{key}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        problems.append(f"{where}: required must be a list of property names")
    if "enum" in schema and not isinstance(schema["enum"], list):
        problems.append(f"{where}: enum must be a list")
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in schema and not _is_number(schema[key]):
            problems.append(f"{where}: {key} must be a number")
    for key in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        if key in schema and not (_is_integer(schema[key]) and schema[key] >= 0):
            problems.append(f"{where}: {key} must be a non-negative integer")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError):
            problems.append(f"{where}: pattern is not a valid regular expression")
    return problems


def validate_json(schema: Any, value: Any) -> dict[Any, Any]:
    """Field errors of ``value`` against a (checked) JSON Schema; empty when it is valid."""
    errors = _validate(schema, value)
    if not errors:
        return {}
    return errors if isinstance(errors, dict) else {"_schema": errors}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )


_TYPE_CHECKS = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": _is_integer,
    "number": _is_number,
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, Mapping),
}


def _validate(schema: Any, value: Any) -> _ErrorTree:
    if schema is True:
        return []
    if schema is False:
        return ["Not allowed."]
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_TYPE_CHECKS[k](value) for k in kinds):
            return [f"Not a valid {' or '.join(kinds)}."]
    own: list[str] = []
    if "enum" in schema and not any(_same(value, choice) for choice in schema["enum"]):
        own.append("Must be one of: " + ", ".join(json.dumps(c) for c in schema["enum"]) + ".")
    if "const" in schema and not _same(value, schema["const"]):
        own.append(f"Must be equal to {json.dumps(schema['const'])}.")
    if _is_number(value):
        own += _bounds(schema, value)
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            own.append(f"Shorter than minimum length {schema['minLength']}.")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            own.append(f"Longer than maximum length {schema['maxLength']}.")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            own.append("String does not match expected pattern.")
    nested: dict[Any, Any] = {}
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            own.append(f"Must have at least {schema['minItems']} items.")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            own.append(f"Must have at most {schema['maxItems']} items.")
        if "items" in schema:
            for index, item in enumerate(value):
                if error := _validate(schema["items"], item):
                    nested[index] = error
    if isinstance(value, Mapping):
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            own.append(f"Must have at least {schema['minProperties']} properties.")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            own.append(f"Must have at most {schema['maxProperties']} properties.")
        nested.update(_validate_object(schema, value))
    if nested:
        if own:
            nested["_schema"] = own
        return nested
    return own


def _validate_object(schema: Mapping[str, Any], value: Mapping[Any, Any]) -> dict[Any, Any]:
    errors: dict[Any, Any] = {}
    properties = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            errors[name] = ["Missing data for required field."]
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            sub = properties[name]
        elif extra is False:
            errors[name] = ["Unknown field."]
            continue
        else:
            sub = extra
        if error := _validate(sub, item):
            errors[name] = error
    return errors


def _bounds(schema: Mapping[str, Any], value: float) -> list[str]:
    errors = []
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"Must be greater than or equal to {schema['minimum']}.")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        errors.append(f"Must be greater than {schema['exclusiveMinimum']}.")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"Must be less than or equal to {schema['maximum']}.")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        errors.append(f"Must be less than {schema['exclusiveMaximum']}.")
    return errors


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)
