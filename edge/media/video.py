"""Video to text: the audio track through speech recognition, a few keyframes through OCR."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from edge.media.base import ConversionError, Section
from edge.media.image import ocr, open_image
from edge.media.stt import NO_SPEECH, transcribe

MAX_FRAMES = 3


def keyframes(path: Path, work: Path, timeout: float) -> list[tuple[float, Path]]:
    """Up to MAX_FRAMES frames spread over the first minute (one every few seconds)."""
    pattern = work / "frame%02d.png"
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(path), "-an",
            "-vf", "fps=1/4,scale='min(1600,iw)':-2", "-frames:v", str(MAX_FRAMES), str(pattern)]
    try:
        subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ConversionError("video decoding (ffmpeg) is not installed on this server") from exc
    frames = [(i * 4.0, work / f"frame{i + 1:02d}.png") for i in range(MAX_FRAMES)]
    return [(seconds, frame) for seconds, frame in frames if frame.exists()]


def convert(path: Path, options: dict[str, Any], work: Path) -> list[Section]:
    timeout = float(options.get("timeout", 60))
    sections: list[Section] = []
    try:
        speech = transcribe(path, work, options)
    except ConversionError:
        speech = ""
    sections.append(Section("audio track", speech or NO_SPEECH))
    for seconds, frame in keyframes(path, work, timeout):
        image = open_image(frame, int(options.get("max_image_pixels", 50_000_000)))
        text = ocr(image, str(options.get("ocr_lang", "eng")))
        if text:
            sections.append(Section(f"frame at {seconds:.0f}s", text))
    if not speech and len(sections) == 1 and not list(work.glob("frame*.png")):
        raise ConversionError("the video could not be decoded")
    return sections
