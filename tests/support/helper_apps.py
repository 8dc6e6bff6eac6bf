"""Helpers used only by the integration tests.

- ``helper`` (fileinfo) reads a text file by URL (the attachment route);
- ``flaky`` fails with 500 for as many calls as a file says, then works (the circuit's whole cycle);
- ``vault`` answers a code word only it knows, for the model to phrase (``reply="model"``): the real-model tests
  check that the word reaches the reply.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
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


@helper.capability(name="read", input_schema=IN, output_schema=OUT, accepts=["text/plain"], reply="direct")
def read(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    """Count the words of a text file."""
    response = requests.get(data["url"], timeout=5)
    if response.status_code != 200:
        raise HelperError(f"could not fetch the file: HTTP {response.status_code}", status=422)
    return {"text": f"{data.get('name') or 'the file'} has {len(response.text.split())} words"}


# -- flaky: answers 500 while its call count is at most the number in $FLAKY_DIR/fail_until, then works ------
flaky = Helper("flaky", description="Fails on purpose for a while, then works", version="1.0.0")
_calls_lock = threading.Lock()

ECHO_IN = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def flaky_calls(directory: Path) -> int:
    """How many calls the flaky helper has received (each one appends a line)."""
    path = directory / "calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


@flaky.capability(name="echo", input_schema=ECHO_IN, output_schema=OUT, reply="direct")
def echo(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    """Say the text back, with the number of this call."""
    directory = Path(os.environ["FLAKY_DIR"])
    with _calls_lock:
        with (directory / "calls").open("a") as calls:
            calls.write(f"{context.call_id}\n")
        number = flaky_calls(directory)
    fail_until = directory / "fail_until"
    if number <= (int(fail_until.read_text()) if fail_until.exists() else 0):
        raise RuntimeError(f"failing on purpose (call {number})")  # the SDK answers 500
    return {"text": f"{data['text']} (call {number})"}


# -- vault: a fact only the helper has, for the model to put into words ------------------------------------------
vault = Helper("vault", description="Knows today's code word", version="1.0.0")
CODE_WORD = "quokka-7731"
VAULT_IN = {"type": "object", "properties": {"question": {"type": "string"}}}


@vault.capability(name="codeword", input_schema=VAULT_IN, output_schema=OUT, reply="model")
def codeword(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    """Tell today's code word."""
    return {"text": f"The code word is {CODE_WORD}."}
