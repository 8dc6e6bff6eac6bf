"""A calculator-shaped helper for the prompt-injection test: it records every call it receives, verbatim.

Named ``calculator.calculate`` like the example helper, so the scripted
model (tests/support/scripted_backend.py) routes ``compute: …`` to it.
Its input schema is strict (an arithmetic expression, nothing else: the SDK
answers 422 to anything more, so such a call never reaches the handler), and
each call's input and whole ``context`` object are appended to the JSON-lines
file named by ``RECORD_PATH``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from helper_sdk import Helper, InvocationContext

helper = Helper("calculator", description="Exact arithmetic", version="1.0.0")

IN = {
    "type": "object",
    "properties": {"expression": {"type": "string", "maxLength": 100, "pattern": r"^[0-9+\-*/(). ]+$"}},
    "required": ["expression"],
    "additionalProperties": False,
}
OUT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


@helper.capability(name="calculate", input_schema=IN, output_schema=OUT, reply="direct")
def calculate(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    """Evaluate an arithmetic expression."""
    with open(os.environ["RECORD_PATH"], "a", encoding="utf-8") as record:
        record.write(json.dumps({"input": data, "context": context.raw, "call_id": context.call_id}) + "\n")
    return {"text": f"calculator got {data['expression']}"}
