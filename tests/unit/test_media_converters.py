"""Converters on real files generated here, each run in its limited child process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge.media.base import ConversionError
from edge.media.docx import check_zip
from edge.media.html import html_to_text
from edge.media.registry import converter_for
from edge.media.runner import Limits, run_converter
from edge.media.text import decode
from tests.support import media_files as mf

LIMITS = Limits(timeout=30, options={"max_image_pixels": 50_000_000})
needs_ocr = pytest.mark.skipif(not mf.have("tesseract"), reason="tesseract-ocr is not installed (.ci/run)")
needs_av = pytest.mark.skipif(not mf.have("ffmpeg", "flite"), reason="ffmpeg/flite are not installed (.ci/run)")


def convert(tmp_path: Path, converter: str, data: bytes, limits: Limits = LIMITS) -> list[tuple[str, str]]:
    path = tmp_path / f"input.{converter}"
    path.write_bytes(data)
    return [(s.where, s.text) for s in run_converter(converter, path, limits)]


def test_the_registry_picks_a_converter_by_mime_type() -> None:
    assert converter_for("application/pdf") == "pdf"
    assert converter_for("application/vnd.openxmlformats-officedocument.wordprocessingml.document") == "docx"
    assert converter_for("text/html; charset=utf-8") == "html"
    assert converter_for("text/csv") == "text" and converter_for("text/markdown") == "text"
    assert converter_for("image/jpeg") == "image" and converter_for("audio/ogg") == "audio"
    assert converter_for("video/mp4") == "video" and converter_for("application/x-msdownload") is None


def test_a_pdf_gives_its_text_page_by_page(tmp_path: Path) -> None:
    sections = convert(tmp_path, "pdf", mf.pdf_bytes(["Invoice number 4711", "Total due 99 euros"]))
    assert sections == [("page 1", "Invoice number 4711"), ("page 2", "Total due 99 euros")]


def test_a_corrupt_pdf_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="PDF is corrupt"):
        convert(tmp_path, "pdf", mf.corrupt_pdf_bytes())


def test_a_docx_gives_paragraphs_and_tables(tmp_path: Path) -> None:
    data = mf.docx_bytes(tmp_path / "a.docx", ["Hello from the document"], [["Apples", "3"], ["Pears", "5"]])
    [(_, text)] = convert(tmp_path, "docx", data)
    assert text.splitlines() == ["Hello from the document", "Apples | 3", "Pears | 5"]


def test_a_docx_zip_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    mf.zip_bomb_docx(path)
    started = time.monotonic()
    with pytest.raises(ConversionError, match="zip bomb"):
        check_zip(path)
    assert time.monotonic() - started < 1.0


def test_text_charsets_are_detected() -> None:
    assert decode("Grüße aus Köln".encode()) == "Grüße aus Köln"
    assert "Grüße" in decode("Grüße aus Köln, schöne Straße, Übermaß und Ärger".encode("cp1252"))


def test_html_becomes_readable_text() -> None:
    markup = ("<html><head><title>t</title><style>p{}</style></head><body><h1>Menu</h1><script>x()</script>"
              "<p>Soup &amp; bread</p><table><tr><td>Tea</td><td>2</td></tr></table></body></html>")
    assert html_to_text(markup) == "Menu\n\nSoup & bread\n\nTea | 2"


@needs_ocr
def test_an_image_is_read_with_ocr(tmp_path: Path) -> None:
    [(where, text)] = convert(tmp_path, "image", mf.png_with_text(["Meeting at noon", "Room 42 on Friday"]))
    assert where == "text in the image" and text.split() == ["Meeting", "at", "noon", "Room", "42", "on", "Friday"]


@needs_ocr
def test_exif_orientation_is_applied_before_ocr(tmp_path: Path) -> None:
    [(_, text)] = convert(tmp_path, "image", mf.png_with_text(["Rotated text works"], rotate=90))
    assert text == "Rotated text works"


@needs_ocr
def test_an_image_without_text_says_so(tmp_path: Path) -> None:
    [(_, text)] = convert(tmp_path, "image", mf.blank_png())
    assert text == "(the image contains no readable text)"


def test_a_decompression_bomb_is_rejected_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ConversionError, match="too large"):
        convert(tmp_path, "image", mf.bomb_png())
    assert time.monotonic() - started < 5.0


@needs_av
def test_speech_is_transcribed_offline(tmp_path: Path) -> None:
    [(where, text)] = convert(tmp_path, "audio", mf.flite_wav(tmp_path / "speech.wav"))
    assert where == "speech" and mf.word_error_rate(mf.SPEECH, text) <= 0.3, text


@needs_av
@needs_ocr
def test_a_video_gives_its_speech_and_its_frames(tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    mf.flite_wav(wav)
    sections = dict(convert(tmp_path, "video", mf.mp4_with_speech(tmp_path / "clip.mp4", wav, "Frame caption here")))
    assert mf.word_error_rate(mf.SPEECH, sections["audio track"]) <= 0.3
    assert sections["frame at 0s"] == "Frame caption here"


def test_a_conversion_past_its_time_limit_is_killed(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="longer than"):
        convert(tmp_path, "pdf", mf.pdf_bytes(["x"]), Limits(timeout=0.01))


def test_a_conversion_over_its_memory_limit_is_stopped_and_said_so(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="too much memory"):
        convert(tmp_path, "pdf", mf.pdf_bytes(["x"]), Limits(memory_bytes=30 * 1_048_576))


def test_the_word_error_rate_counts_edits() -> None:
    assert mf.word_error_rate("a b c d", "a x c") == 0.5
