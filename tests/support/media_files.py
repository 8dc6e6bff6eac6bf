"""Real media files generated in the tests: PDF, DOCX, PNG with text, flite speech, MP4, and bad ones."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

SPEECH = "the quick brown fox jumps over the lazy dog"


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def pdf_bytes(pages: list[str]) -> bytes:
    """A minimal valid PDF: one Helvetica text line per page (enough for pypdf's extractor)."""
    objects: list[bytes] = []
    n_pages = len(pages)
    font_id = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 14 Tf 72 720 Td ({escaped}) Tj ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                       f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def corrupt_pdf_bytes() -> bytes:
    return b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ngarbage\x00\xff" * 3


def docx_bytes(path: Path, paragraphs: list[str], table: list[list[str]]) -> bytes:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    grid = document.add_table(rows=len(table), cols=len(table[0]))
    for r, row in enumerate(table):
        for c, value in enumerate(row):
            grid.cell(r, c).text = value
    document.save(str(path))
    return path.read_bytes()


def png_with_text(lines: list[str], *, rotate: int = 0) -> bytes:
    """Black text on white, large enough for Tesseract; ``rotate`` stores it rotated with an EXIF fix-up tag."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=40)
    image = Image.new("L", (1000, 90 + 70 * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((40, 40 + 70 * i), line, fill=0, font=font)
    buffer = io.BytesIO()
    if rotate:
        # Stored turned 90 degrees counter-clockwise; EXIF orientation 6 tells viewers to turn it back.
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def blank_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 220, 240)).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims 10 gigapixels: Pillow must refuse it at open, before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def zip_bomb_docx(path: Path) -> bytes:
    """A 'DOCX' whose one member inflates 1000x (hundreds of MB declared)."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"\x00" * (300 * 1_048_576))
    return path.read_bytes()


def flite_wav(path: Path, text: str = SPEECH, voice: str = "slt") -> bytes:
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True, capture_output=True)
    return path.read_bytes()


def mp4_with_speech(path: Path, wav: Path, caption: str | None = None) -> bytes:
    """A short MP4: a still frame (with ``caption`` drawn when given) and the speech as its audio track."""
    frame = path.with_suffix(".png")
    frame.write_bytes(png_with_text([caption]) if caption else blank_png())
    subprocess.run([
        "ffmpeg", "-nostdin", "-v", "error", "-y", "-loop", "1", "-i", str(frame), "-i", str(wav),
        "-c:v", "mpeg4", "-q:v", "3", "-r", "5", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path),
    ], check=True, capture_output=True)
    return path.read_bytes()


def word_error_rate(expected: str, heard: str) -> float:
    """Levenshtein distance over words, divided by the expected word count."""
    ref, hyp = expected.lower().split(), heard.lower().split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))
