"""Plain text, Markdown and CSV: only the charset needs guessing (charset-normalizer)."""

from __future__ import annotations

from pathlib import Path

from charset_normalizer import from_bytes

from edge.media.base import ConversionError, Section


def decode(data: bytes) -> str:
    """Bytes to str: UTF-8 first (most common, and unambiguous), else the detected charset."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    best = from_bytes(data).best()
    if best is None:
        raise ConversionError("the file does not look like text")
    return str(best)


def convert(path: Path) -> list[Section]:
    return [Section("", decode(path.read_bytes()).strip())]
