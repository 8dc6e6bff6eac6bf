"""Where the secret from the last registration lives, so the WSGI app can verify calls with it.

In one process it is an attribute. Under gunicorn only the master registers,
so it writes the secret to a file (0600, in a private temporary directory)
and every worker reads it back, re-reading only when the file changes.

The file is read and written as bytes. Opening it as text looked the codec up,
and the first lookup imports ``encodings.ascii``: the master's registration
thread did that just as gunicorn forked a worker, and the worker was left with
a lookup that failed for good ("LookupError: unknown encoding: ascii" on every
``/healthz`` and call). ``bytes.decode("ascii")`` never consults the registry.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Protocol

__all__ = ["FileSecret", "MemorySecret", "SecretStore"]


class SecretStore(Protocol):
    def get(self) -> str | None: ...

    def set(self, secret: str | None) -> None: ...


class MemorySecret:
    def __init__(self) -> None:
        self._secret: str | None = None

    def get(self) -> str | None:
        return self._secret

    def set(self, secret: str | None) -> None:
        self._secret = secret


class FileSecret:
    """A secret shared through a file: written atomically by one process, read cheaply (one stat) by many."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int, int] | None = None
        self._secret: str | None = None

    def get(self) -> str | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
        with self._lock:
            if seen != self._seen:
                try:
                    self._secret = self.path.read_bytes().decode("ascii").strip() or None
                except FileNotFoundError:
                    return None
                self._seen = seen
            return self._secret

    def set(self, secret: str | None) -> None:
        if secret is None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".secret-")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(secret.encode("ascii"))
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
