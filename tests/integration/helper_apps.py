"""A helper used only by the integration tests: it reads a text file by URL (the attachment route)."""

from __future__ import annotations

from typing import Any

import requests

from helper_sdk import Helper, HelperError, InvocationContext

helper = Helper("fileinfo", description="Reads text files people send", version="1.0.0")

IN = {
    "type": "object",
    "properties": {"url": {"type": "string"}, "mime": {"type": "string"}, "name": {"type": "string"}},
    "required": ["url"],
}
OUT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


@helper.capability(name="read", input_schema=IN, output_schema=OUT, accepts=["text/*"], reply="direct")
def read(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    """Count the words of a text file."""
    response = requests.get(data["url"], timeout=5)
    if response.status_code != 200:
        raise HelperError(f"could not fetch the file: HTTP {response.status_code}", status=422)
    return {"text": f"{data.get('name') or 'the file'} has {len(response.text.split())} words"}
