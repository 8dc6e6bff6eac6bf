"""marshmallow → JSON Schema for the manifest, and the built-in JSON Schema validator."""

from __future__ import annotations

import enum
from typing import Any

import marshmallow as ma
import pytest
from marshmallow import Schema, fields, validate

from helper_sdk._schemas import DRAFT, InvalidData, adapt, marshmallow_to_json_schema, validate_json


class Address(Schema):
    city = fields.String(required=True)


class Color(enum.Enum):
    RED = "r"
    BLUE = "b"


class Everything(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=20), metadata={"description": "who"})
    age = fields.Integer(validate=validate.Range(min=0, max=150))
    ratio = fields.Float(validate=validate.Range(min=0, max=1, min_inclusive=False))
    active = fields.Boolean(load_default=True)
    tags = fields.List(fields.String(validate=validate.OneOf(["a", "b"])), validate=validate.Length(max=3))
    scores = fields.Dict(keys=fields.String(), values=fields.Integer())
    home = fields.Nested(Address, required=True)
    places = fields.Nested(Address, many=True)
    anything = fields.Raw()
    nickname = fields.String(allow_none=True, data_key="nick")
    code = fields.String(validate=validate.Regexp(r"^[A-Z]{3}$"))
    level = fields.String(validate=validate.OneOf(["low", "high"]), allow_none=True)
    color = fields.Enum(Color, by_value=True)
    secret = fields.String(dump_only=True)


def test_marshmallow_fields_become_json_schema() -> None:
    assert marshmallow_to_json_schema(Everything()) == {
        "$schema": DRAFT,
        "type": "object",
        "title": "Everything",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 20, "description": "who"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "active": {"type": "boolean", "default": True},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 3},
            "scores": {"type": "object", "additionalProperties": {"type": "integer"}},
            "home": {
                "type": "object",
                "title": "Address",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "places": {
                "type": "array",
                "items": {
                    "type": "object",
                    "title": "Address",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
            "anything": {},
            "nick": {"type": ["string", "null"]},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "level": {"type": ["string", "null"], "enum": ["low", "high", None]},
            "color": {"enum": ["r", "b"]},
        },
        "required": ["name", "home"],
        "additionalProperties": False,
    }


def test_a_schema_that_tolerates_unknown_fields_allows_additional_properties() -> None:
    class Loose(Schema):
        class Meta:
            unknown = ma.EXCLUDE

        a = fields.String()

    assert "additionalProperties" not in marshmallow_to_json_schema(Loose())


def test_a_self_nesting_schema_does_not_recurse_forever() -> None:
    class Node(Schema):
        value = fields.Integer()
        children = fields.List(fields.Nested(lambda: Node()))

    schema = marshmallow_to_json_schema(Node())
    assert schema["properties"]["children"] == {"type": "array", "items": {"type": "object"}}


def test_temporal_and_string_formats_are_described() -> None:
    schema = Schema.from_dict(
        {
            "when": fields.DateTime(),
            "day": fields.Date(),
            "id": fields.UUID(),
            "mail": fields.Email(),
            "at": fields.Time(),
        }
    )()
    properties = marshmallow_to_json_schema(schema)["properties"]
    assert properties["when"] == {"type": "string", "format": "date-time"}
    assert properties["day"] == {"type": "string", "format": "date"}
    assert properties["id"] == {"type": "string", "format": "uuid"}
    assert properties["mail"] == {"type": "string", "format": "email"}
    assert properties["at"] == {"type": "string", "format": "time"}


def test_marshmallow_schemas_validate_with_marshmallow() -> None:
    adapter = adapt(Everything, where="test")
    loaded = adapter.load({"name": "Ada", "home": {"city": "London"}, "nick": None})
    assert loaded == {"name": "Ada", "home": {"city": "London"}, "nickname": None, "active": True}
    with pytest.raises(InvalidData) as invalid:
        adapter.load({"name": "", "age": -1, "home": {}, "bogus": 1})
    assert invalid.value.fields == {
        "name": ["Length must be between 1 and 20."],
        "age": ["Must be greater than or equal to 0 and less than or equal to 150."],
        "home": {"city": ["Missing data for required field."]},
        "bogus": ["Unknown field."],
    }


def test_marshmallow_output_is_dumped_to_plain_json() -> None:
    adapter = adapt(Schema.from_dict({"when": fields.DateTime(required=True)}), where="test")
    assert adapter.dump({"when": "2025-01-02T03:04:05+00:00"}) == {"when": "2025-01-02T03:04:05+00:00"}
    with pytest.raises(InvalidData):
        adapter.dump({"when": "yesterday"})


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[A-Z]"},
        "age": {"type": "integer", "minimum": 0, "exclusiveMaximum": 200},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "role": {"enum": ["admin", "user"]},
        "kind": {"const": "person"},
        "nick": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "meta": {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 1},
        "flag": {"type": "boolean"},
    },
    "required": ["name"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"name": "Ada"}, {}),
        ({"name": "Ada", "age": 36.0, "ratio": 0.5, "role": "admin", "kind": "person", "nick": None}, {}),
        ({"name": "Ada", "tags": ["x"], "meta": {"a": 1}, "flag": False}, {}),
        ({}, {"name": ["Missing data for required field."]}),
        ({"name": 5}, {"name": ["Not a valid string."]}),
        ({"name": "A"}, {"name": ["Shorter than minimum length 2."]}),
        ({"name": "Adalovelace"}, {"name": ["Longer than maximum length 5."]}),
        ({"name": "ada"}, {"name": ["String does not match expected pattern."]}),
        ({"name": "Ada", "age": True}, {"age": ["Not a valid integer."]}),
        ({"name": "Ada", "age": 1.5}, {"age": ["Not a valid integer."]}),
        ({"name": "Ada", "age": -1}, {"age": ["Must be greater than or equal to 0."]}),
        ({"name": "Ada", "age": 200}, {"age": ["Must be less than 200."]}),
        ({"name": "Ada", "ratio": 0}, {"ratio": ["Must be greater than 0."]}),
        ({"name": "Ada", "ratio": "1"}, {"ratio": ["Not a valid number."]}),
        ({"name": "Ada", "role": "root"}, {"role": ['Must be one of: "admin", "user".']}),
        ({"name": "Ada", "kind": "robot"}, {"kind": ['Must be equal to "person".']}),
        ({"name": "Ada", "nick": 3}, {"nick": ["Not a valid string or null."]}),
        ({"name": "Ada", "tags": []}, {"tags": ["Must have at least 1 items."]}),
        ({"name": "Ada", "tags": ["a", 2]}, {"tags": {1: ["Not a valid string."]}}),
        (
            {"name": "Ada", "tags": ["a", "b", 3]},
            {"tags": {2: ["Not a valid string."], "_schema": ["Must have at most 2 items."]}},
        ),
        ({"name": "Ada", "meta": {"a": "x"}}, {"meta": {"a": ["Not a valid integer."]}}),
        ({"name": "Ada", "meta": {"a": 1, "b": 2}}, {"meta": ["Must have at most 1 properties."]}),
        ({"name": "Ada", "flag": 0}, {"flag": ["Not a valid boolean."]}),
        ({"name": "Ada", "extra": 1}, {"extra": ["Unknown field."]}),
    ],
)
def test_the_json_schema_validator(data: dict[str, Any], errors: dict[str, Any]) -> None:
    assert validate_json(PERSON, data) == errors


def test_a_top_level_value_of_the_wrong_type_is_a_schema_error() -> None:
    assert validate_json(PERSON, [1]) == {"_schema": ["Not a valid object."]}


def test_boolean_subschemas_and_annotations() -> None:
    schema = {
        "$schema": DRAFT,
        "title": "T",
        "type": "object",
        "properties": {"never": False, "any": True, "when": {"type": "string", "format": "date-time"}},
        "x-internal": "ignored",
    }
    adapter = adapt(schema, where="test")
    assert adapter.load({"any": [1], "when": "not checked: format is an annotation"})
    with pytest.raises(InvalidData) as invalid:
        adapter.load({"never": 1})
    assert invalid.value.fields == {"never": ["Not allowed."]}
