"""Child entry point: ``python -m edge.media.run <converter> <input> <output.json> <options json>``.

Runs one converter under the limits the parent set (rlimits, timeout) and
writes ``{"sections": [[where, text], ...]}`` or ``{"error": "..."}``.
A crash or a kill leaves no output: the parent reports that itself.
"""

from __future__ import annotations

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


def main(argv: list[str]) -> int:
    converter, source, target = argv[0], Path(argv[1]), Path(argv[2])
    options = json.loads(argv[3]) if len(argv) > 3 else {}
    try:
        result: dict[str, Any] = {"sections": [[s.where, s.text] for s in convert(converter, source, options)]}
    except ConversionError as exc:
        result = {"error": str(exc)}
    except MemoryError:
        result = {"error": "the file needs too much memory to convert"}
    except Exception:  # a converter library choked on the file: say so, keep the detail in the log
        traceback.print_exc()
        result = {"error": "the file could not be converted (corrupt or unusual)"}
    target.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
