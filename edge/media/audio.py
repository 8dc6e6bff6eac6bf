"""Audio to text: ffmpeg resamples, then the configured speech engine transcribes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.media.base import Section
from edge.media.stt import NO_SPEECH, transcribe


def convert(path: Path, options: dict[str, Any], work: Path) -> list[Section]:
    return [Section("speech", transcribe(path, work, options) or NO_SPEECH)]
