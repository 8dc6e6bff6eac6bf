"""Find the GGUF the workers should load, downloading it if needed.

Resolution order: ``MODEL_PATH`` if the file exists; else ``MODEL_FILE`` from
the Hugging Face repo ``MODEL_REPO`` (cached under ``MODEL_DIR``).  If nobody
chose a model (the defaults are in force) and the download fails, e.g. on an
offline machine, the CLI writes the random tiny model instead, so ``make run``
still starts end to end, and says loudly that replies will be gibberish.  An
explicitly configured model that cannot be had is an error, never silently
replaced.

CLI: ``python -m core_worker.model_files`` prints the resolved path on stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["TINY_MODEL_NAME", "ModelResolutionError", "download_model", "main", "resolve_model_path", "tiny_fallback"]

log = logging.getLogger(__name__)

TINY_MODEL_NAME = "switchboard-tiny-random.gguf"

_GIBBERISH_WARNING = """
###############################################################################
#  WARNING: no model could be downloaded (offline?), so a TINY RANDOM MODEL   #
#  was generated instead. Everything runs, but REPLIES WILL BE GIBBERISH.     #
#  Set MODEL_PATH to a local .gguf file, or allow downloads from huggingface. #
###############################################################################
"""


class ModelResolutionError(RuntimeError):
    """No usable model file could be found or downloaded."""


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe of the Hub: offline, huggingface_hub retries with backoff
    for ~25 s before giving up.  With a proxy configured we cannot probe, so we
    let huggingface_hub try."""
    import socket
    import urllib.parse
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if urllib.request.getproxies():
        return True
    url = urllib.parse.urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def download_model(repo: str, filename: str, model_dir: str | Path) -> Path:
    """The cached copy if there is one (no network at all), else download it."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, filename, cache_dir=str(model_dir))
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    if not _hub_reachable():
        raise ModelResolutionError("the Hugging Face Hub is not reachable (offline?)")
    return Path(hf_hub_download(repo, filename, cache_dir=str(model_dir)))


def tiny_fallback(model_dir: str | Path) -> Path:
    """The generated tiny model under ``model_dir``, written on first use."""
    from core_worker.tiny_model import write_tiny_model

    path = Path(model_dir) / TINY_MODEL_NAME
    if not path.is_file():
        write_tiny_model(path)
    return path


def resolve_model_path(
    model_path: str,
    model_repo: str,
    model_file: str,
    model_dir: str | Path,
    *,
    explicit: bool = True,
    allow_tiny_fallback: bool = False,
) -> Path:
    """Resolve the model file as described in the module docstring.

    ``explicit`` says the repo/file were chosen by the operator (not defaults);
    only a non-explicit choice may fall back to the tiny model, and only when
    ``allow_tiny_fallback`` is set.
    """
    if model_path:
        if Path(model_path).is_file():
            return Path(model_path)
        log.warning("MODEL_PATH=%s does not exist; trying %s/%s", model_path, model_repo, model_file)
        explicit = True
    if not model_repo or not model_file:
        raise ModelResolutionError("no model configured: set MODEL_PATH, or MODEL_REPO and MODEL_FILE")
    try:
        return download_model(model_repo, model_file, model_dir)
    except Exception as exc:  # offline, 404, auth, disk: huggingface_hub raises many types
        reason = f"cannot download {model_file} from {model_repo}: {exc}"
        if explicit or not allow_tiny_fallback:
            raise ModelResolutionError(reason) from exc
        log.warning("%s", reason)
    return tiny_fallback(model_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core_worker.model_files",
        description="Print the path of the model to load, downloading it (or generating a tiny one) if needed.",
    )
    parser.add_argument("--no-fallback", action="store_true", help="fail instead of generating the tiny model")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("model_files: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    from tasks.settings import Settings, SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"model_files: error: {exc}", file=sys.stderr)
        return 2
    defaults = Settings()
    explicit = (settings.model_repo, settings.model_file) != (defaults.model_repo, defaults.model_file)
    try:
        path = resolve_model_path(
            settings.model_path,
            settings.model_repo,
            settings.model_file,
            settings.model_dir,
            explicit=explicit,
            allow_tiny_fallback=not args.no_fallback,
        )
    except ModelResolutionError as exc:
        print(f"model_files: error: {exc}", file=sys.stderr)
        return 1
    if path.name == TINY_MODEL_NAME:
        print(_GIBBERISH_WARNING, file=sys.stderr)
    print(path.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
