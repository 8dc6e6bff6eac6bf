"""Make the single-file examples (``calculator``, ``converter``) importable by name."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = str(Path(__file__).resolve().parents[1])
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)
