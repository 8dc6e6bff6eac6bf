"""Regenerate the settings table in docs/configuration.md from tasks/settings.py."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's settings, not whatever copy is installed

from tasks.settings import settings_markdown  # noqa: E402

DOC = ROOT / "docs" / "configuration.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def main() -> None:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{settings_markdown()}{END}{tail}")


if __name__ == "__main__":
    main()
