"""Run a converter in a child process with hard limits: address space, CPU seconds, wall clock.

A hostile or broken file can at worst kill its own child; the worker only
sees a polite ``ConversionError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.media.base import ConversionError, Section

__all__ = ["Limits", "run_converter"]

ROOT = Path(__file__).resolve().parents[2]
# The io worker runs many threads (deliveries are I/O); conversions are CPU-bound, so at most one per core.
_SLOTS = threading.BoundedSemaphore(os.cpu_count() or 1)


@dataclass(frozen=True)
class Limits:
    timeout: float = 60.0  # wall clock, seconds
    memory_bytes: int = 1024 * 1_048_576  # RLIMIT_AS of the child (and ffmpeg/tesseract under it)
    options: dict[str, Any] = field(default_factory=dict)


def _limiter(limits: Limits) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        cpu = max(1, int(limits.timeout) + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()  # its own group, so a timeout kills ffmpeg/tesseract too

    return apply


def run_converter(converter: str, path: Path, limits: Limits) -> list[Section]:
    """Sections of text from ``path``; raises ConversionError naming the problem."""
    if not _SLOTS.acquire(timeout=limits.timeout):
        raise ConversionError("the server is busy converting other files; please try again shortly")
    try:
        return _run(converter, path, limits)
    finally:
        _SLOTS.release()


def _run(converter: str, path: Path, limits: Limits) -> list[Section]:
    with tempfile.TemporaryDirectory(prefix="sb-convert-") as tmp:
        out = Path(tmp) / "out.json"
        options = {**limits.options, "timeout": limits.timeout}
        argv = [sys.executable, "-m", "edge.media.run", converter, str(path), str(out), json.dumps(options)]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_THREAD_LIMIT": "1", "LANG": "C.UTF-8",
               "PYTHONPATH": str(ROOT), "HOME": tmp}
        proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=_limiter(limits))
        try:
            _, stderr = proc.communicate(timeout=limits.timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            raise ConversionError(f"converting took longer than {limits.timeout:.0f} seconds") from exc
        if not out.exists():
            tail = stderr.decode(errors="replace")[-300:]
            if "MemoryError" in tail or proc.returncode in (-9, -6):
                raise ConversionError("the file needs too much memory to convert")
            if proc.returncode == -signal.SIGXCPU:
                raise ConversionError("converting took too much processing time")
            raise ConversionError("the converter crashed on this file")
        result = json.loads(out.read_text(encoding="utf-8"))
    if "error" in result:
        raise ConversionError(str(result["error"]))
    return [Section(str(where), str(text)) for where, text in result["sections"]]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)
