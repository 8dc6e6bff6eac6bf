"""Speech to text: pluggable engines over 16 kHz mono s16 PCM (ffmpeg does the resampling).

``pocketsphinx`` ships an offline English model; ``faster_whisper`` is used
when installed and ``MEDIA_STT_MODEL`` points to a model.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.media.base import ConversionError

NO_SPEECH = "(no speech was recognised)"


def to_pcm(path: Path, out: Path, timeout: float) -> Path:
    """Any audio/video to raw 16 kHz mono s16le; only the first audio stream, no video."""
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(path), "-vn", "-ac", "1", "-ar", "16000",
            "-f", "s16le", "-c:a", "pcm_s16le", str(out)]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ConversionError("audio decoding (ffmpeg) is not installed on this server") from exc
    if done.returncode != 0:
        raise ConversionError("the audio could not be decoded (corrupt or no audio track)")
    return out


def pocketsphinx_engine(pcm: bytes, options: dict[str, Any]) -> str:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr.strip() if hyp is not None else ""


def faster_whisper_engine(pcm: bytes, options: dict[str, Any]) -> str:
    import numpy as np
    from faster_whisper import WhisperModel

    if not options.get("stt_model"):
        raise ConversionError("the faster_whisper engine needs MEDIA_STT_MODEL")
    model = WhisperModel(str(options["stt_model"]), device="cpu", compute_type="int8", cpu_threads=1)
    audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
    segments, _ = model.transcribe(audio)
    return " ".join(s.text.strip() for s in segments).strip()


ENGINES: dict[str, Callable[[bytes, dict[str, Any]], str]] = {
    "pocketsphinx": pocketsphinx_engine,
    "faster_whisper": faster_whisper_engine,
}


def transcribe(path: Path, work: Path, options: dict[str, Any]) -> str:
    engine = ENGINES.get(str(options.get("stt_engine", "pocketsphinx")))
    if engine is None:
        raise ConversionError(f"unknown speech engine {options.get('stt_engine')!r}")
    pcm = to_pcm(path, work / "audio.raw", float(options.get("timeout", 60))).read_bytes()
    if not pcm:
        return ""
    return engine(pcm, options)
