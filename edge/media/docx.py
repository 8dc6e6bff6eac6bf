"""DOCX text in document order, tables included (``doc.paragraphs`` alone skips them).

A DOCX is a zip: its declared sizes are checked before anything is inflated
(zip bombs).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from edge.media.base import ConversionError, Section

MAX_UNZIPPED_BYTES = 200 * 1_048_576
MAX_RATIO = 100


def check_zip(path: Path, max_total: int = MAX_UNZIPPED_BYTES, max_ratio: int = MAX_RATIO) -> None:
    """Refuse archives that would inflate too much, in total or per member."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConversionError("the document is corrupt (not a valid DOCX)") from exc
    total = sum(i.file_size for i in infos)
    if total > max_total:
        raise ConversionError("the document expands to too much data (a zip bomb?)")
    for info in infos:
        if info.file_size > 1_048_576 and info.file_size > max_ratio * max(info.compress_size, 1):
            raise ConversionError("the document is compressed suspiciously well (a zip bomb?)")


def convert(path: Path) -> list[Section]:
    check_zip(path)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
        lines: list[str] = []
        for block in document.iter_inner_content():
            if isinstance(block, Paragraph):
                lines.append(block.text)
            elif isinstance(block, Table):
                for row in block.rows:
                    lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    except ConversionError:
        raise
    except Exception as exc:  # python-docx raises many kinds on malformed XML
        raise ConversionError("the document is corrupt") from exc
    return [Section("", "\n".join(lines).strip())]
