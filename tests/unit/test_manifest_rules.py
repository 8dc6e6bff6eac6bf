"""One manifest schema: the core's registry and the SDK's FakeCore refuse the same manifests, the same way.

Each bad manifest goes to the real edge app (``POST /v1/helpers`` over Flask's client, Redis faked) and to
``helper_sdk.testing.FakeCore`` over real HTTP; both must answer 400 naming the same fields with the same
words, and both must accept the good ones.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from flask.testing import FlaskClient
from helper_sdk.manifest import SCHEMA, manifest_problems
from helper_sdk.testing import FakeCore

from tests.support.edge import EdgeApp

TOKEN = "registration-token"
ROOT = Path(__file__).resolve().parents[2]


def good() -> dict[str, Any]:
    return {
        "name": "calculator", "url": "http://127.0.0.1:8100", "version": "1.0.0", "description": "Arithmetic",
        "capabilities": [{
            "name": "calculate", "description": "Evaluate an arithmetic expression",
            "input_schema": {"type": "object", "properties": {"expression": {"type": "string"}}},
            "output_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
            "reply": "direct", "accepts": ["text/plain"], "timeout": 5,
        }],
    }


def changed(path: str, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    body = good()
    node: Any = body
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parents:
        node = node[part]
    if delete:
        del node[last]
    else:
        node[last] = value
    return body


CAP = "capabilities.0"
BAD: dict[str, Any] = {
    "no name": changed("name", delete=True),
    "name with a capital": changed("name", "Calculator"),
    "name with a newline": changed("name", "calc\n"),
    "name too long": changed("name", "a" * 33),
    "name not a string": changed("name", 7),
    "url not http": changed("url", "ftp://example.com"),
    "url without a host": changed("url", "http://:80/x"),
    "url with a bad port": changed("url", "http://example.com:99999"),
    "empty version": changed("version", ""),
    "long version": changed("version", "1" * 65),
    "long description": changed("description", "x" * 2001),
    "no capabilities": changed("capabilities", []),
    "33 capabilities": changed("capabilities", [{**good()["capabilities"][0], "name": f"c{i}"} for i in range(33)]),
    "a capability not an object": changed("capabilities", ["calculate"]),
    "capability without a description": changed(f"{CAP}.description", delete=True),
    "capability description too long": changed(f"{CAP}.description", "d" * 1001),
    "two capabilities of one name": changed("capabilities", [good()["capabilities"][0]] * 2),
    "input schema not an object schema": changed(f"{CAP}.input_schema", {"type": "array"}),
    "input schema not a JSON Schema": changed(f"{CAP}.input_schema", {"type": "object", "properties": 3}),
    "output schema a list": changed(f"{CAP}.output_schema", []),
    "reply unknown": changed(f"{CAP}.reply", "shout"),
    "direct reply without text": changed(f"{CAP}.output_schema", {"type": "object"}),
    "direct reply with numeric text": changed(f"{CAP}.output_schema",
                                              {"type": "object", "properties": {"text": {"type": "integer"}}}),
    "timeout too small": changed(f"{CAP}.timeout", 0.01),
    "timeout a boolean": changed(f"{CAP}.timeout", True),
    "accepts a pattern": changed(f"{CAP}.accepts", ["image/*"]),
    "accepts a non-MIME": changed(f"{CAP}.accepts", ["plain text"]),
    "accepts 33 types": changed(f"{CAP}.accepts", [f"text/x-{i}" for i in range(33)]),
    "produces a string": changed(f"{CAP}.produces", "text/plain"),
}
GOOD = {
    "as written": good(),
    "minimal": {"name": "m", "url": "https://127.0.0.1", "version": "1",
                "capabilities": [{"name": "c", "description": "d", "input_schema": {}, "output_schema": {}}]},
    "unknown fields are ignored": {**good(), "homepage": "https://example.com"},
}


@pytest.fixture
def core(edge_app: EdgeApp) -> Iterator[FlaskClient]:
    with edge_app(key_prefix="test", helper_registration_token=TOKEN).test_client() as client:
        yield client


@pytest.fixture(scope="module")
def fake_core() -> Iterator[FakeCore]:
    with FakeCore(token=TOKEN) as fake:
        yield fake


def both(core: FlaskClient, fake_core: FakeCore, body: Any) -> tuple[Any, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    real = core.post("/v1/helpers", data=json.dumps(body), headers=headers, content_type="application/json")
    fake = requests.post(f"{fake_core.url}/v1/helpers", json=body, headers=headers, timeout=5)
    fake_core.forget(body["name"]) if isinstance(body, dict) and fake.status_code == 201 else None
    return real, fake


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_core_and_the_fake_core_refuse_a_bad_manifest_alike(case: str, core: FlaskClient,
                                                                 fake_core: FakeCore) -> None:
    real, fake = both(core, fake_core, BAD[case])
    assert (real.status_code, fake.status_code) == (400, 400), (real.get_json(), fake.text)
    fields = real.get_json()["fields"]
    assert fields, case
    assert fields == fake.json()["fields"]


@pytest.mark.parametrize("case", sorted(GOOD))
def test_the_core_and_the_fake_core_accept_a_good_manifest_alike(case: str, core: FlaskClient,
                                                                 fake_core: FakeCore) -> None:
    real, fake = both(core, fake_core, GOOD[case])
    assert (real.status_code, fake.status_code) == (201, 201), (real.get_json(), fake.text)


def test_a_body_that_is_not_an_object_is_refused_by_both(core: FlaskClient, fake_core: FakeCore) -> None:
    real, fake = both(core, fake_core, [1, 2])
    assert (real.status_code, fake.status_code) == (400, 400)
    assert "object" in real.get_json()["error"] and fake.json()["fields"] == {
        "_schema": ["the manifest must be a JSON object"]}


def test_the_schema_is_a_valid_json_schema_and_ships_in_the_sdk() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    shipped = ROOT / "helper_sdk" / "src" / "helper_sdk" / "manifest.schema.json"
    assert json.loads(shipped.read_text(encoding="utf-8")) == SCHEMA
    assert "manifest.schema.json" in (ROOT / "helper_sdk" / "pyproject.toml").read_text(encoding="utf-8")


def test_problems_name_every_field_at_once() -> None:
    body = copy.deepcopy(good())
    body["name"], body["capabilities"][0]["reply"] = "Bad Name", "shout"
    assert manifest_problems(body) == {
        "name": ["use 1-32 of a-z, 0-9, _ and -, starting with a letter"],
        "capabilities": {"0": {"reply": ["must be 'model' or 'direct'"]}},
    }
