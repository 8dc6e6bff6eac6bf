"""Make ``wordcount_helper`` importable from the source tree when it is not installed."""

from __future__ import annotations

import importlib
import sys
from importlib.util import find_spec
from pathlib import Path

_spec = find_spec("wordcount_helper")
if _spec is None or _spec.origin is None:  # not installed (or only the project folder, seen as a namespace package)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.modules.pop("wordcount_helper", None)
    importlib.invalidate_caches()
