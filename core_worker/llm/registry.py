"""Build the configured backend.

Backend modules are imported only here, on demand: importing
``core_worker.llm`` must not pull in llama.cpp or ctransformers, and nothing
may load a model before Celery forks its children (they would hang).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .base import BackendConfig, LLMBackend, ModelLoadError

__all__ = ["BACKENDS", "load_backend"]

# Accepted names -> canonical backend.
_ALIASES = {
    "llama_cpp": "llama_cpp",
    "llama-cpp": "llama_cpp",
    "llamacpp": "llama_cpp",
    "ctransformers": "ctransformers",
    "openai": "openai",
}
BACKENDS: tuple[str, ...] = ("llama_cpp", "ctransformers", "openai")


def _builtin(name: str) -> Callable[[BackendConfig], Any]:
    if name == "llama_cpp":
        from .llama_cpp_backend import LlamaCppBackend

        return LlamaCppBackend
    if name == "ctransformers":
        from .ctransformers_backend import CTransformersBackend

        return CTransformersBackend
    from .openai_backend import OpenAIBackend

    return OpenAIBackend


def _custom(spec: str) -> Callable[[BackendConfig], Any]:
    """Resolve ``package.module:factory`` (tests and benchmarks plug in echo backends this way)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelLoadError(f"custom backend must look like 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import custom backend module {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ModelLoadError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise ModelLoadError(f"custom backend factory {spec!r} is not callable")
    factory: Callable[[BackendConfig], Any] = target
    return factory


def load_backend(config: BackendConfig) -> LLMBackend:
    """Create (and load) the backend named by ``config.backend``.

    Call it in each worker process after fork (Celery's worker_process_init).
    Raises ModelLoadError with a human-readable reason on any failure.
    """
    spec = config.backend.strip()
    if ":" in spec:
        factory = _custom(spec)
    else:
        name = _ALIASES.get(spec.lower())
        if name is None:
            raise ModelLoadError(
                f"unknown LLM backend {config.backend!r}; use one of {', '.join(BACKENDS)} or 'module:factory'"
            )
        factory = _builtin(name)
    try:
        backend = factory(config)
    except ModelLoadError:
        raise
    except Exception as exc:  # a custom factory's own failure, reported the same way
        raise ModelLoadError(f"backend {spec!r} failed to load: {exc}") from exc
    missing = [m for m in ("chat", "count_tokens", "close") if not callable(getattr(backend, m, None))]
    missing += [a for a in ("name", "context_length") if not hasattr(backend, a)]
    if missing:
        raise ModelLoadError(f"backend {spec!r} returned {type(backend).__name__}, lacking {', '.join(missing)}")
    result: LLMBackend = backend
    return result
