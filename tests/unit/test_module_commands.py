"""Every ``python -m <module>`` the docs, the Procfile, the Makefile and the scripts tell someone to run
names a project module that runs when started so (a moved CLI that silently does nothing fails here)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"(?:python3?|\$PY\"?|\$\(BIN\)/python) -m ([a-z_][\w.]*)")
PROJECT = ("tasks", "edge", "core_worker", "redis_stores", "telemetry", "outbound_http", "operator_tools",
           "celery_runtime", "bench", "scripts")


def commands() -> dict[str, set[str]]:
    sources = [*ROOT.glob("docs/**/*.md"), ROOT / "README.md", ROOT / "Procfile", ROOT / "Procfile.flower",
               ROOT / "Makefile", *ROOT.glob("scripts/*"), *ROOT.glob("bench/*.md")]
    found: dict[str, set[str]] = {}
    for path in sources:
        for module in COMMAND.findall(path.read_text(encoding="utf-8")):
            if module.split(".")[0] in PROJECT:
                found.setdefault(module.rstrip("."), set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_documented_module_command_runs_something() -> None:
    found = commands()
    assert "operator_tools.deadletter_cli" in found  # the rule reads the docs at all
    broken = []
    for module, where in sorted(found.items()):
        path = ROOT.joinpath(*module.split("."))
        main = path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
        if not main.is_file() or (main.name != "__main__.py" and
                                  "if __name__ == \"__main__\":" not in main.read_text(encoding="utf-8")):
            broken.append(f"python -m {module} (in {', '.join(sorted(where))})")
    assert broken == []
