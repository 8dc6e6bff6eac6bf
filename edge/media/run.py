"""Child entry point: ``python -m edge.media.run <converter> <input> <output.json> <options json>``.

Runs one converter under the limits the parent set (rlimits, timeout) and
writes ``{"sections": [[where, text], ...]}`` or ``{"error": "..."}``.
A crash or a kill leaves no output: the parent reports that itself.
"""

from __future__ import annotations

import errno
import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from edge.media.base import ConversionError, Section


def convert(converter: str, path: Path, options: dict[str, Any]) -> list[Section]:
    with tempfile.TemporaryDirectory(prefix="sb-media-") as tmp:
        work = Path(tmp)
        if converter == "text":
            from edge.media import text
            return text.convert(path)
        if converter == "html":
            from edge.media import html
            return html.convert(path)
        if converter == "pdf":
            from edge.media import pdf
            return pdf.convert(path)
        if converter == "docx":
            from edge.media import docx
            return docx.convert(path)
        if converter == "image":
            from edge.media import image
            return image.convert(path, options)
        if converter == "audio":
            from edge.media import audio
            return audio.convert(path, options, work)
        if converter == "video":
            from edge.media import video
            return video.convert(path, options, work)
    raise ConversionError(f"no converter named {converter!r}")


def _out_of_memory(exc: BaseException) -> bool:
    """Under RLIMIT_AS, running out of memory also shows as a library that fails to load or map."""
    while exc is not None:
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
            return True
        if "Cannot allocate memory" in str(exc) or "failed to map segment" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def main(argv: list[str]) -> int:
    converter, source, target = argv[0], Path(argv[1]), Path(argv[2])
    options = json.loads(argv[3]) if len(argv) > 3 else {}
    try:
        result: dict[str, Any] = {"sections": [[s.where, s.text] for s in convert(converter, source, options)]}
    except ConversionError as exc:
        result = {"error": str(exc)}
    except Exception as exc:  # a converter library choked on the file: say so, keep the detail in the log
        traceback.print_exc()
        if _out_of_memory(exc):
            result = {"error": "the file needs too much memory to convert"}
        else:
            result = {"error": "the file could not be converted (corrupt or unusual)"}
    target.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
