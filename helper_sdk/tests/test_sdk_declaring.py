"""Declaring a helper and its capabilities; every mistake the core would reject fails at declaration."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import Schema, fields

from helper_sdk import Helper, InvocationContext, ManifestError

OBJECT = {"type": "object"}


class TextOut(Schema):
    text = fields.String(required=True)


def handler(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    """Do the thing."""
    return {}


def test_capabilities_are_declared_with_a_decorator(sample_helper: Helper) -> None:
    manifest = sample_helper.manifest("http://127.0.0.1:8100/")
    assert manifest["name"] == "sample"
    assert manifest["url"] == "http://127.0.0.1:8100"
    assert manifest["version"] == "1.2.3"
    assert manifest["description"] == "The SDK's test double"
    assert [c["name"] for c in manifest["capabilities"]] == ["echo", "whoami", "behave"]
    echo = manifest["capabilities"][0]
    assert set(echo) == {"name", "description", "input_schema", "output_schema", "accepts", "produces", "reply"}
    assert echo["description"] == "Repeat a message."
    assert echo["reply"] == "direct"
    assert echo["accepts"] == echo["produces"] == []


def test_name_and_description_default_to_the_function() -> None:
    helper = Helper("h")
    helper.capability(input_schema=OBJECT, output_schema=OBJECT)(handler)
    assert helper.capabilities["handler"].description == "Do the thing."


def test_the_decorated_function_stays_a_plain_function() -> None:
    helper = Helper("h")
    decorated = helper.capability(input_schema=OBJECT, output_schema=OBJECT)(handler)
    assert decorated is handler


@pytest.mark.parametrize("name", ["", "Upper", "1abc", "a" * 33, "with space", "dot.ted", None])
def test_bad_names_are_refused(name: Any) -> None:
    with pytest.raises(ManifestError, match="use 1-32 of a-z"):
        Helper(name)
    with pytest.raises(ManifestError, match="use 1-32 of a-z"):
        Helper("h").capability(name=name or "", input_schema=OBJECT, output_schema=OBJECT)(handler)


@pytest.mark.parametrize("name", ["a", "a-b_c9", "x" * 32])
def test_good_names_are_accepted(name: str) -> None:
    assert Helper(name).name == name


def test_a_capability_name_is_used_once() -> None:
    helper = Helper("h")
    helper.capability(input_schema=OBJECT, output_schema=OBJECT)(handler)
    with pytest.raises(ManifestError, match="already has"):
        helper.capability(input_schema=OBJECT, output_schema=OBJECT)(handler)


def test_a_description_is_required() -> None:
    def undocumented(data: Any, context: InvocationContext) -> dict[str, Any]:
        return {}

    with pytest.raises(ManifestError, match="needs a description"):
        Helper("h").capability(input_schema=OBJECT, output_schema=OBJECT)(undocumented)


def test_the_handler_must_take_data_and_context() -> None:
    def one(data: Any) -> dict[str, Any]:
        """One argument."""
        return {}

    with pytest.raises(ManifestError, match=r"accept \(data, context\)"):
        Helper("h").capability(input_schema=OBJECT, output_schema=OBJECT)(one)


def test_reply_is_model_or_direct() -> None:
    with pytest.raises(ManifestError, match="reply must be"):
        Helper("h").capability(input_schema=OBJECT, output_schema=OBJECT, reply="loud")(handler)


def test_a_direct_reply_needs_a_required_string_text() -> None:
    declare = Helper("h").capability
    declare(input_schema=OBJECT, output_schema=TextOut, reply="direct", name="ok")(handler)
    declare(
        input_schema=OBJECT,
        output_schema={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        reply="direct",
        name="ok2",
    )(handler)
    for schema in (
        OBJECT,
        {"type": "object", "properties": {"text": {"type": "string"}}},
        {"type": "object", "properties": {"text": {"type": "integer"}}, "required": ["text"]},
        Schema.from_dict({"text": fields.String()}),
    ):
        with pytest.raises(ManifestError, match="string property 'text'"):
            declare(input_schema=OBJECT, output_schema=schema, reply="direct", name="bad")(handler)


def test_mime_types_are_checked_and_normalized() -> None:
    helper = Helper("h")
    helper.capability(input_schema=OBJECT, output_schema=OBJECT, accepts=["Text/Plain", "image/*"])(handler)
    assert helper.capabilities["handler"].accepts == ("text/plain", "image/*")
    bad_values: list[Any] = [["text"], ["*/plain"], ["*/*"], "text/plain", [""], [3]]
    for bad in bad_values:
        with pytest.raises(ManifestError):
            Helper("h").capability(input_schema=OBJECT, output_schema=OBJECT, produces=bad)(handler)


def test_a_timeout_is_sent_only_when_asked_for() -> None:
    helper = Helper("h")
    helper.capability(input_schema=OBJECT, output_schema=OBJECT, name="slow", timeout=45)(handler)
    helper.capability(input_schema=OBJECT, output_schema=OBJECT, name="usual")(handler)
    slow, usual = helper.manifest("http://127.0.0.1:8100")["capabilities"]
    assert slow["timeout"] == 45.0
    assert "timeout" not in usual
    for bad in (0.01, "10", True):
        with pytest.raises(ManifestError, match="timeout"):
            helper.capability(input_schema=OBJECT, output_schema=OBJECT, name="bad", timeout=bad)(handler)  # type: ignore[arg-type]


def test_the_cores_size_limits_are_checked_at_declaration() -> None:
    with pytest.raises(ManifestError, match="64 characters"):
        Helper("h", version="1" * 65)
    with pytest.raises(ManifestError, match="2000 characters"):
        Helper("h", description="x" * 2001)
    with pytest.raises(ManifestError, match="1000 characters"):
        Helper("h").capability(input_schema=OBJECT, output_schema=OBJECT, description="x" * 1001)(handler)
    helper = Helper("h")
    for index in range(32):
        helper.capability(input_schema=OBJECT, output_schema=OBJECT, name=f"c{index}")(handler)
    with pytest.raises(ManifestError, match="32 capabilities"):
        helper.capability(input_schema=OBJECT, output_schema=OBJECT, name="one_more")(handler)


def test_schemas_must_be_marshmallow_or_json_schema_objects() -> None:
    declare = Helper("h").capability
    with pytest.raises(ManifestError, match="expected a marshmallow Schema"):
        declare(input_schema="object", output_schema=OBJECT)(handler)
    with pytest.raises(ManifestError, match='"type": "object"'):
        declare(input_schema={"type": "string"}, output_schema=OBJECT)(handler)
    with pytest.raises(ManifestError, match="many=True"):
        declare(input_schema=TextOut(many=True), output_schema=OBJECT)(handler)
    with pytest.raises(ManifestError, match="not plain JSON"):
        declare(input_schema={"type": "object", "default": {1, 2}}, output_schema=OBJECT)(handler)


def test_a_json_schema_keyword_the_sdk_cannot_enforce_is_refused() -> None:
    schema = {"type": "object", "properties": {"n": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}}
    with pytest.raises(ManifestError, match="unsupported JSON Schema keyword 'oneOf'"):
        Helper("h").capability(input_schema=schema, output_schema=OBJECT)(handler)


def test_a_helper_without_capabilities_has_no_manifest() -> None:
    with pytest.raises(ManifestError, match="no capabilities"):
        Helper("h").manifest("http://127.0.0.1:8100")


def test_the_manifest_url_must_be_http() -> None:
    helper = Helper("h")
    helper.capability(input_schema=OBJECT, output_schema=OBJECT)(handler)
    with pytest.raises(ValueError, match="http"):
        helper.manifest("ftp://example.com")
