"""Media to text end to end: POST /v1/files -> queue `convert` (real converters, limits) -> core -> reply.

The scripted backend echoes the last user message, so each reply shows
exactly what the model was given: the person's words plus the converted text
with its provenance.  All files are generated here (PDF, PNG, flite speech,
MP4 with that speech).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support import media_files as mf
from tests.support.factories import AUTH
from tests.support.harness import System

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mf.have("tesseract", "ffmpeg", "flite"), reason="media tools missing (.ci/run)"),
]

MakeSystem = Callable[..., System]


def upload(system: System, user: str, name: str, mime: str, data: bytes, text: str = "") -> requests.Response:
    return requests.post(f"{system.base_url}/v1/files", data={"user": user, "text": text},
                         files={"file": (name, data, mime)}, headers=AUTH, timeout=15)


def test_files_of_every_kind_are_converted_and_reach_the_model(make_system: MakeSystem, tmp_path: Path) -> None:
    system = make_system(
        LLM_BACKEND="tests.support.scripted_backend:factory", LLM_MAX_TOKENS="400",
        TASK_SOFT_TIME_LIMIT="20", TASK_TIME_LIMIT="25", VISIBILITY_TIMEOUT="30", MEDIA_CONVERT_TIMEOUT="15",
        MEDIA_MAX_IMAGE_BYTES="200000",
    )
    system.start_all()

    wav = tmp_path / "speech.wav"
    mf.flite_wav(wav)
    files = {
        "pdf": ("invoice.pdf", "application/pdf", mf.pdf_bytes(["Invoice 4711", "Total due 99 euros"]), "sum?"),
        "png": ("note.png", "image/png", mf.png_with_text(["Meeting at noon"]), ""),
        "wav": ("voice.wav", "audio/wav", wav.read_bytes(), ""),
        "mp4": ("clip.mp4", "video/mp4", mf.mp4_with_speech(tmp_path / "clip.mp4", wav, "Frame caption here"), ""),
        "bad": ("broken.pdf", "application/pdf", mf.corrupt_pdf_bytes(), "can you read it?"),
        "bomb": ("bomb.png", "image/png", mf.bomb_png(), ""),
    }
    started = time.monotonic()
    ids = {}
    for key, (name, mime, data, text) in files.items():
        response = upload(system, f"user-{key}", name, mime, data, text)
        assert response.status_code == 202, response.text
        ids[key] = response.json()["message_id"]

    replies = {}
    for key, message_id in ids.items():
        record = system.status(message_id, wait=min(30.0, max(1.0, 60 - (time.monotonic() - started))))
        assert record["status"] == "answered", (key, record, system.logs())
        replies[key] = record["reply"]["text"]

    assert replies["pdf"] == ("echo: sum?\n\n[from invoice.pdf, page 1] Invoice 4711\n\n"
                              "[from invoice.pdf, page 2] Total due 99 euros")
    assert replies["png"] == "echo: [from note.png, text in the image] Meeting at noon"
    heard = replies["wav"].removeprefix("echo: [from voice.wav, speech] ")
    assert mf.word_error_rate(mf.SPEECH, heard) <= 0.3, replies["wav"]
    audio_line, frame_line = replies["mp4"].removeprefix("echo: ").split("\n\n")
    assert mf.word_error_rate(mf.SPEECH, audio_line.removeprefix("[from clip.mp4, audio track] ")) <= 0.3
    assert frame_line == "[from clip.mp4, frame at 0s] Frame caption here"
    assert replies["bad"] == "echo: can you read it?\n\n[broken.pdf could not be read: the PDF is corrupt]"
    assert replies["bomb"].startswith("echo: [bomb.png could not be read: the image is too large")


def test_an_oversized_file_is_refused_with_413(make_system: MakeSystem) -> None:
    system = make_system(MEDIA_MAX_IMAGE_BYTES="1000")
    system.start_edge()
    response = upload(system, "big", "big.png", "image/png", mf.png_with_text(["too big"]))
    assert response.status_code == 413 and "limit for image/png" in response.json()["error"]
