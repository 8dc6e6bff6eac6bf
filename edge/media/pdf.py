"""PDF text per page (pypdf); scanned pages without a text layer simply come out empty."""

from __future__ import annotations

from pathlib import Path

from edge.media.base import ConversionError, Section

MAX_PAGES = 500


def convert(path: Path) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted:
            raise ConversionError("the PDF is password-protected")
        pages = reader.pages
        sections = []
        for number, page in enumerate(pages, start=1):
            if number > MAX_PAGES:
                break
            text = (page.extract_text() or "").strip()
            if text:
                sections.append(Section(f"page {number}", text))
    except ConversionError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise ConversionError("the PDF is corrupt") from exc
    if not sections:
        raise ConversionError("the PDF has no text layer (a scan?)")
    return sections
