"""Which converter handles a MIME type, and which size limit applies (pluggable: add a row)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

__all__ = ["CONVERTERS", "Kind", "converter_for", "kind_for"]


@dataclass(frozen=True)
class Kind:
    converter: str  # module name in edge.media
    category: str  # "document", "image", "audio" or "video": picks the size limit


# First match wins; globs as in the helper manifests' ``accepts``.
CONVERTERS: list[tuple[str, Kind]] = [
    ("application/pdf", Kind("pdf", "document")),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", Kind("docx", "document")),
    ("text/html", Kind("html", "document")),
    ("application/xhtml+xml", Kind("html", "document")),
    ("text/*", Kind("text", "document")),
    ("application/json", Kind("text", "document")),
    ("application/csv", Kind("text", "document")),
    ("image/*", Kind("image", "image")),
    ("audio/*", Kind("audio", "audio")),
    ("video/*", Kind("video", "video")),
]


def kind_for(mime: str) -> Kind | None:
    mime = mime.lower().split(";", 1)[0].strip()
    for pattern, kind in CONVERTERS:
        if fnmatch.fnmatch(mime, pattern):
            return kind
    return None


def converter_for(mime: str) -> str | None:
    kind = kind_for(mime)
    return kind.converter if kind else None
