"""Counts words, lines and characters: a helper distributed as its own package.

``switchboard-helper run wordcount_helper:helper`` serves it. Two ways in:

- ``wordcount`` takes the text itself: ``/wordcount the quick brown fox``
  fills its one required string field, or the model passes the text;
- ``wordcount_file`` ``accepts`` text/plain: when a message carries such an
  attachment, the core calls it with the attachment's descriptor
  (``url``, ``mime``, ``name``, ``size``) and the helper fetches the file.
"""

from __future__ import annotations

from typing import Any

import requests
from helper_sdk import Helper, HelperError, InvocationContext, Unavailable
from marshmallow import Schema, fields, validate

__all__ = ["count", "helper"]

MAX_TEXT = 1_000_000  # characters a message may carry (the SDK's request limit is 1 MiB anyway)
MAX_FILE_BYTES = 5 * 1024 * 1024
FETCH_TIMEOUT = 10.0

helper = Helper("wordcount", description="Counts words, lines and characters of a text", version="1.0.0")


class TextIn(Schema):
    text = fields.String(required=True, validate=validate.Length(max=MAX_TEXT), metadata={"description": "the text"})


class FileIn(Schema):
    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    mime = fields.String()
    name = fields.String(allow_none=True)
    size = fields.Integer(allow_none=True)


class CountOut(Schema):
    words = fields.Integer(required=True, metadata={"description": "whitespace-separated words, as wc -w counts"})
    lines = fields.Integer(required=True, metadata={"description": "lines of text; a final newline adds none"})
    characters = fields.Integer(required=True, metadata={"description": "Unicode characters, spaces included"})
    characters_no_spaces = fields.Integer(required=True)


@helper.capability(input_schema=TextIn, output_schema=CountOut)
def wordcount(data: dict[str, Any], context: InvocationContext) -> dict[str, int]:
    """Count the words, lines and characters of a text."""
    return count(data["text"])


@helper.capability(input_schema=FileIn, output_schema=CountOut, accepts=["text/plain"], timeout=30)
def wordcount_file(data: dict[str, Any], context: InvocationContext) -> dict[str, int]:
    """Count the words, lines and characters of a plain-text file someone sent."""
    return count(fetch_text(data["url"]))


def count(text: str) -> dict[str, int]:
    return {
        "words": len(text.split()),
        "lines": len(text.splitlines()),
        "characters": len(text),
        "characters_no_spaces": sum(1 for c in text if not c.isspace()),
    }


def fetch_text(url: str) -> str:
    """The file at ``url`` as text: no redirects, bounded in time and size."""
    try:
        with requests.get(url, timeout=FETCH_TIMEOUT, stream=True, allow_redirects=False) as response:
            if response.status_code != 200:
                raise HelperError(f"could not fetch the file: HTTP {response.status_code}")
            body = b""
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_FILE_BYTES:
                    raise HelperError(f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB", status=413)
            return body.decode(response.encoding or "utf-8", errors="replace")
    except requests.RequestException as error:
        raise Unavailable(f"could not fetch the file: {error.__class__.__name__}", retry_after=5) from None
