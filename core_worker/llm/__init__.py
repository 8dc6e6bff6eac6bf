"""LLM backends behind one small interface (see base.py); load with load_backend().

Importing this package loads no model library.
"""

from .base import (
    BackendConfig,
    ChatMessage,
    Completion,
    GenerationError,
    LLMBackend,
    LLMError,
    ModelLoadError,
)
from .registry import BACKENDS, load_backend

__all__ = [
    "BACKENDS",
    "BackendConfig",
    "ChatMessage",
    "Completion",
    "GenerationError",
    "LLMBackend",
    "LLMError",
    "ModelLoadError",
    "load_backend",
]
