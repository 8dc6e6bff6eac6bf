"""Fuzz the JSON API with schemathesis against ``GET /openapi.json`` of a running edge (gunicorn, real Redis).

Every operation of the JSON API, the helper routes and the health routes
gets generated requests (valid and invalid); each response must not be a
5xx and must conform to the document: a documented status code, content
type, headers and body schema.  Bounded (examples per operation, no
deadline per example: the machine is shared) so it stays well inside two
minutes.  No workers run: messages are only queued.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.factories import AUTH
from tests.support.harness import System

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MakeSystem = Callable[..., System]
TOKEN = "fuzz-registration-token"
EXAMPLES_PER_OPERATION = 50  # per operation and mode (valid data, invalid data)
OTHER_EXAMPLES_PER_OPERATION = 15  # the routes outside the JSON API, mostly refused before their body is read
JSON_API = r"^/(v1/messages|v1/helpers|v1/files$|healthz|readyz|v1/status|openapi\.json)"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture
def edge(make_system: MakeSystem) -> System:
    system = make_system(HELPER_REGISTRATION_TOKEN=TOKEN)  # limits on (too high to reach): their path is fuzzed too
    system.start_edge()
    return system


def test_openapi_json_is_the_documented_file(edge: System) -> None:
    served = requests.get(f"{edge.base_url}/openapi.json", timeout=10)
    assert served.status_code == 200 and served.headers["Content-Type"] == "application/json"
    assert served.json() == yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    json.dumps(served.json())  # and it is plain JSON


def fuzz_operations(edge: System, path_regex: str, examples: int) -> list[str]:
    """Generated requests (valid and invalid, query strings included) for every operation under ``path_regex``;
    each operation's first failure."""
    schema = schemathesis.openapi.from_url(f"{edge.base_url}/openapi.json").include(path_regex=path_regex)
    assert all(isinstance(result, Ok) for result in schema.get_all_operations()), "the document does not load"
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    session = requests.Session()
    session.headers.update(AUTH)  # a client key: the doors' answers past authentication are what is fuzzed
    failures: list[str] = []
    for operation, mode in [(op, mode) for op in operations for mode in GenerationMode]:

        @hypothesis.settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
        @given(case=operation.as_strategy(mode))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=edge.base_url, session=session, checks=CHECKS, timeout=15)

        try:
            fuzz()
        except hypothesis.errors.Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing in the document to violate (no parameters, no body)
        except Exception as exc:  # collect every operation's first failure, then report them all
            failures.append(f"{operation.label} ({mode} data): {exc}")
    return failures


def test_the_json_api_survives_fuzzing_and_answers_as_documented(edge: System) -> None:
    failures = fuzz_operations(edge, JSON_API, EXAMPLES_PER_OPERATION)
    assert not failures, "\n\n".join(failures)


def test_every_other_route_survives_fuzzing_and_answers_as_documented(edge: System) -> None:
    """Channel webhooks, callbacks, file and page routes: mostly refused unsigned (403), never a 5xx."""
    schema = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    assert len(schema["paths"]) >= 25
    failures = fuzz_operations(edge, r"^/(?!(v1/messages|v1/helpers|v1/files$|healthz|readyz|v1/status|openapi\.json))",
                               OTHER_EXAMPLES_PER_OPERATION)
    assert not failures, "\n\n".join(failures)
