"""Images to text with Tesseract OCR; EXIF orientation applied first, decompression bombs refused."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from edge.media.base import ConversionError, Section

NO_TEXT = "(the image contains no readable text)"


def open_image(path: Path, max_pixels: int) -> Any:
    """Open with Pillow's bomb check as a hard error (its default is only a warning below 2x the limit)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ConversionError(f"the image is too large (over {max_pixels} pixels)") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConversionError("the image is corrupt or in an unknown format") from exc
    return ImageOps.exif_transpose(image)


def ocr(image: Any, lang: str = "eng") -> str:
    import pytesseract

    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    try:
        return str(pytesseract.image_to_string(image, lang=lang)).strip()
    except pytesseract.TesseractNotFoundError as exc:
        raise ConversionError("text recognition (Tesseract) is not installed on this server") from exc


def convert(path: Path, options: dict[str, Any]) -> list[Section]:
    image = open_image(path, int(options.get("max_image_pixels", 50_000_000)))
    text = ocr(image, str(options.get("ocr_lang", "eng")))
    return [Section("text in the image", text or NO_TEXT)]
