"""What one HTTP answer of a helper means: a result, the helper's refusal of this input, or the helper failing.

The split decides everything that follows (docs/helpers.md, "Errors"):

- ``ok``: 2xx with ``{"output": ...}`` matching the output schema.
- ``refused``: the helper's own answer about *this input* — a 400/404/409/413/415/422 carrying the SDK's
  error body ``{"error": "<message>", "fields"?: {...}}``, or a 2xx carrying that body and no ``output``.
  It is the answer to the call: not retried, not counted against the circuit, and its message goes to
  the person ("The calculator couldn't do that: division by zero.").
- ``failed``: the helper failing — 5xx, timeouts, connection errors, malformed or schema-invalid output,
  any other 4xx, and a 4xx without a well-formed error body (a proxy's HTML 404 is not the helper
  speaking).  These count toward the circuit and give the "unavailable" reply.

Pure functions, no I/O: the call task (helper_calls.py) feeds them what ``post`` returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema

__all__ = ["REFUSAL_STATUS", "Verdict", "judge", "refusal_message"]

Outcome = Literal["ok", "refused", "failed"]

REFUSAL_STATUS = frozenset({400, 404, 409, 413, 415, 422})
RETRYABLE_STATUS = frozenset({408, 425, 429, 502, 503, 504})
AUTH_STATUS = frozenset({401, 403})
MAX_MESSAGE_CHARS = 300  # what a helper may say to a person in one refusal
MAX_FIELD_PROBLEMS = 5

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    output: dict[str, Any] | None = None
    error: str | None = None  # refused: the helper's message for the person; failed: what went wrong (operators)
    retryable: bool = False
    counts: bool = True  # False: a first 401/403, likely a secret still being rotated; the re-try decides


def judge(status: int, body: bytes, output_schema: dict[str, Any], *, first_try: bool) -> Verdict:
    """The meaning of a helper's HTTP answer ``status`` + ``body`` (already size-limited by the caller)."""
    payload = _json(body)
    if 200 <= status < 300:
        if isinstance(payload, dict) and "output" not in payload and (message := refusal_message(payload)):
            return Verdict("refused", error=message)
        return _output(payload, output_schema)
    if status in REFUSAL_STATUS and (message := refusal_message(payload)):
        return Verdict("refused", error=message)
    error = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"
    if status in AUTH_STATUS and first_try:  # a helper that has just re-registered may not hold its new secret yet
        return Verdict("failed", error=error, retryable=True, counts=False)
    return Verdict("failed", error=error, retryable=status in RETRYABLE_STATUS or status >= 500)


def refusal_message(payload: Any) -> str | None:
    """The person-facing message of a well-formed error body ``{"error": str, "fields"?: object}``, else None.

    Field problems are appended ("invalid input (expression: Shorter than minimum length 1.)"); control
    characters are dropped and the text is bounded, since it goes to a person as it is.
    """
    if not isinstance(payload, dict):
        return None
    error, fields = payload.get("error"), payload.get("fields")
    if not isinstance(error, str) or not error.strip() or not (fields is None or isinstance(fields, dict)):
        return None
    text = _clean(error)
    problems = [f"{path}: {problem}" if path else problem for path, problem in _problems(fields or {}, "")]
    if problems:
        shown = problems[:MAX_FIELD_PROBLEMS] + (["…"] if len(problems) > MAX_FIELD_PROBLEMS else [])
        text = f"{text} ({_clean('; '.join(shown))})"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1].rstrip() + "…"


def _problems(fields: Any, path: str) -> Iterator[tuple[str, str]]:
    """``(field path, message)`` pairs of marshmallow-shaped field errors, depth first."""
    if isinstance(fields, dict):
        for key, value in fields.items():
            yield from _problems(value, f"{path}.{key}" if path else str(key))
    elif isinstance(fields, list):
        for item in fields:
            yield from _problems(item, path)
    elif fields is not None:
        yield path, str(fields)


def _clean(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _output(payload: Any, schema: dict[str, Any]) -> Verdict:
    if not isinstance(payload, dict) or "output" not in payload:
        return Verdict("failed", error="answered without a JSON 'output'")
    try:
        jsonschema.validate(payload["output"], schema)
    except jsonschema.ValidationError as exc:
        return Verdict("failed", error=f"output does not match its schema: {exc.message}")
    if not isinstance(payload["output"], dict):  # every output schema describes an object (checked at registration)
        return Verdict("failed", error="output is not a JSON object")
    return Verdict("ok", output=payload["output"])
