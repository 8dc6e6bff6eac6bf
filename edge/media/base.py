"""What a converter returns, and the one error it may raise (its message is shown to the person)."""

from __future__ import annotations

from dataclasses import dataclass


class ConversionError(Exception):
    """The file cannot be turned into text; the message names the problem politely (no traceback)."""


@dataclass(frozen=True)
class Section:
    """Text from one place in a file ("page 2", "audio track"); ``where`` is empty for the whole file."""

    where: str
    text: str
