"""``switchboard-helper run module:helper``: serve a helper with gunicorn and keep it registered.

How registration works with several workers: only gunicorn's master
registers. Its ``when_ready`` hook (sockets bound, workers not yet forked)
starts the Lifecycle thread, which writes each secret the core hands out to
a 0600 file in a private temporary directory; every worker's app reads that
file (one ``stat`` per call, re-read when it changes). When the master halts
(SIGTERM, SIGINT, SIGQUIT) it deregisters and removes the file *before* the
workers drain, so the core stops routing calls here while in-flight calls
finish; calls not yet verified get 503 + Retry-After. A registration the
core refuses for good stops the server with exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from ._errors import ManifestError, RegistrationError
from ._helper import Helper
from ._lifecycle import Lifecycle
from ._options import DEFAULT_CORE_URL, DEFAULT_HOST, DEFAULT_PORT, RunOptions, resolve
from ._secrets import FileSecret

__all__ = ["load_helper", "main"]

log = logging.getLogger("helper_sdk")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
    )
    try:
        helper = load_helper(args.target)
        options = resolve(
            host=args.host, port=args.port, public_url=args.public_url, core_url=args.core_url, token=args.token
        )
        helper.manifest(options.public_url)
    except (ImportError, ManifestError, RegistrationError, ValueError) as error:
        print(f"switchboard-helper: {error}", file=sys.stderr)
        return 2
    kept = args.secret_file or os.environ.get("HELPER_SECRET_FILE")
    return serve(helper, options, workers=args.workers, threads=args.threads,
                 secret_file=Path(kept).resolve() if kept else None)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="switchboard-helper", description="Run a Switchboard helper.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="serve a helper with gunicorn, registered with the core",
        description="Serve a helper with gunicorn and keep it registered with the core.",
        epilog="The registration token is better passed in HELPER_REGISTRATION_TOKEN than on the command line.",
    )
    run.add_argument("target", help="module:attribute or path/to/file.py[:attribute]; the attribute defaults to helper")
    run.add_argument("--host", help=f"address to listen on (env HOST, default {DEFAULT_HOST})")
    run.add_argument("--port", type=int, help=f"port to listen on (env PORT, default {DEFAULT_PORT})")
    run.add_argument("--public-url", help="URL the core calls (env HELPER_PUBLIC_URL, default http://host:port)")
    run.add_argument("--core-url", help=f"the core's base URL (env SWITCHBOARD_CORE_URL, default {DEFAULT_CORE_URL})")
    run.add_argument("--token", help="registration token (env HELPER_REGISTRATION_TOKEN)")
    run.add_argument(
        "--secret-file",
        help="keep the secret the core hands out in this file (0600) across restarts, so a helper killed without "
        "leaving takes its name back at once (env HELPER_SECRET_FILE; default: a private temporary file)",
    )
    run.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (default 1)")
    run.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def load_helper(target: str) -> Helper:
    """Import ``module:attr`` or ``path/to/file.py:attr`` (attr defaults to ``helper``; may be a factory)."""
    location, _, attribute = target.partition(":")
    attribute = attribute or "helper"
    if location.endswith(".py") or os.sep in location:
        module = _import_file(Path(location))
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # like `python -m`: modules next to you are importable
        module = importlib.import_module(location)
    found = getattr(module, attribute, None)
    if found is None:
        raise ImportError(f"{location} has no attribute {attribute!r}")
    if not isinstance(found, Helper) and callable(found):
        found = found()
    if not isinstance(found, Helper):
        raise ImportError(f"{target} is a {type(found).__name__}, not a helper_sdk.Helper")
    return found


def _import_file(path: Path) -> Any:
    path = path.resolve()
    if not path.is_file():
        raise ImportError(f"no such file: {path}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    sys.path.insert(0, str(path.parent))
    spec.loader.exec_module(module)
    return module


def serve(
    helper: Helper, options: RunOptions, *, workers: int = 1, threads: int = 4, secret_file: Path | None = None
) -> int:
    """Run gunicorn in this process (its master) until it stops; the exit status."""
    directory = tempfile.mkdtemp(prefix=f"switchboard-helper-{helper.name}-")  # mode 0700
    secret_file = secret_file or Path(directory) / "secret"
    lifecycle = Lifecycle(
        helper,
        core_url=options.core_url,
        public_url=options.public_url,
        token=options.token,
        secret_file=secret_file,
        on_fatal=lambda _error: os.kill(os.getpid(), signal.SIGTERM),  # graceful gunicorn shutdown
    )
    host = f"[{options.host}]" if ":" in options.host and not options.host.startswith("[") else options.host
    settings: dict[str, Any] = {
        "bind": f"{host}:{options.port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": "-",
        "control_socket_disable": True,
        "proc_name": f"switchboard-helper-{helper.name}",
        "when_ready": lambda _arbiter: lifecycle.start(),
    }
    master = os.getpid()
    status: int = 0
    try:
        _GunicornApp(helper, lifecycle, secret_file, settings).run()
    except SystemExit as exit_:
        if os.getpid() != master:
            raise  # a worker (forked inside run) leaving through these frames: the cleanup is the master's
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        if os.getpid() == master:
            lifecycle.stop()  # already done by _Arbiter.halt unless gunicorn failed to start
            shutil.rmtree(directory, ignore_errors=True)
    if lifecycle.error is not None:
        print(f"switchboard-helper: {lifecycle.error}", file=sys.stderr)
        return 1
    return status


class _Arbiter(Arbiter):
    """gunicorn's master, leaving the core as the first step of shutting down rather than the last."""

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        self.app.lifecycle.stop()
        super().halt(reason, exit_status)


class _GunicornApp(BaseApplication):
    """gunicorn without its command line: our settings, and a WSGI app per worker that reads the shared secret."""

    def __init__(self, helper: Helper, lifecycle: Lifecycle, secret_file: Path, settings: dict[str, Any]) -> None:
        self.helper = helper
        self.lifecycle = lifecycle
        self.secret_file = secret_file
        self.settings = settings
        super().__init__()

    def run(self) -> None:
        try:
            _Arbiter(self).run()
        except RuntimeError as error:  # what BaseApplication.run does, with our arbiter
            print(f"\nError: {error}\n", file=sys.stderr)
            sys.exit(1)

    def load_config(self) -> None:
        for key, value in self.settings.items():
            if key in self.cfg.settings:  # control_socket_disable only exists in newer gunicorn
                self.cfg.set(key, value)

    def load(self) -> Any:
        return self.helper.create_app(secret=FileSecret(self.secret_file).get)
