"""Every environment variable the project reads is a ``Settings`` field (tasks/settings.py), so it is typed,
checked at start-up and listed in docs/configuration.md; no module reads ``os.environ`` on its own."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tasks", "edge", "core_worker", "redis_stores", "telemetry", "outbound_http", "operator_tools",
            "celery_runtime")
# Not configuration: a conversion's child process gets a PATH to find its tools in, and nothing else.
PASSED_ON = {("edge/media/runner.py", "PATH")}


def environment_reads(path: Path) -> list[tuple[int, str]]:
    """``os.environ[...]``, ``os.environ.get(...)``, ``os.getenv(...)`` and a bare ``os.environ``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        text = ast.unparse(node) if isinstance(node, ast.Attribute | ast.Call | ast.Subscript) else ""
        if isinstance(node, ast.Call) and text.startswith(("os.environ.get(", "os.getenv(")):
            arg = node.args[0] if node.args else None
            found.append((node.lineno, str(arg.value) if isinstance(arg, ast.Constant) else ast.unparse(node)))
        elif isinstance(node, ast.Subscript) and text.startswith("os.environ["):
            key = node.slice
            found.append((node.lineno, str(key.value) if isinstance(key, ast.Constant) else text))
    return found


def test_only_the_settings_read_the_environment() -> None:
    stray = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel == "tasks/settings.py":
                continue
            stray += [f"{rel}:{line} reads {name}" for line, name in environment_reads(path)
                      if (rel, name) not in PASSED_ON]
    assert stray == []


def test_the_procfile_passes_no_knob_of_its_own() -> None:
    """Concurrency and ports come from the settings, not from ``${VAR:-default}`` in the Procfile."""
    assert "${" not in (ROOT / "Procfile").read_text(encoding="utf-8")
