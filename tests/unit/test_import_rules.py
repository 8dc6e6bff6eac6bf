"""The import rules of docs/architecture.md, read from the source with ``ast`` (imports inside functions too).

A process's package may import the contract (``tasks``) and the shared runtime, never the other side:
the edge never imports a worker package, the workers never import the edge, ``tasks`` imports no other
project package and starts nothing, ``helper_sdk`` imports nothing of the project, and tests and
benchmarks share support modules, never a ``test_*`` module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROJECT = {"tasks", "edge", "core_worker", "redis_stores", "telemetry", "outbound_http", "operator_tools",
           "celery_runtime", "helper_sdk", "tests", "bench", "examples", "scripts"}
SHARED_RUNTIME = {"redis_stores", "telemetry", "outbound_http", "operator_tools", "celery_runtime"}
# What each package may import of the project (beyond itself).
ALLOWED: dict[str, set[str]] = {
    "tasks": set(),
    "redis_stores": {"tasks", "telemetry", "outbound_http", "helper_sdk"},
    "telemetry": {"tasks"},
    "outbound_http": {"tasks"},
    "operator_tools": {"tasks", "redis_stores", "telemetry"},
    "celery_runtime": {"tasks", "redis_stores", "telemetry"},
    "edge": {"tasks", "helper_sdk"} | SHARED_RUNTIME,
    "core_worker": {"tasks", "helper_sdk"} | SHARED_RUNTIME,
    "helper_sdk": set(),
}
SOURCES = {"helper_sdk": ROOT / "helper_sdk" / "src" / "helper_sdk"}


def imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, absolute, with its line (relative imports resolved against it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parts = path.relative_to(root).with_suffix("").parts
    if parts[:2] == ("helper_sdk", "src"):
        parts = parts[2:]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(parts[: len(parts) - node.level])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from tests.unit import test_x` imports a module too
                yield node.lineno, f"{module}.{alias.name}"


def package_files(package: str) -> list[Path]:
    return sorted((SOURCES.get(package) or ROOT / package).rglob("*.py"))


def breaches(package: str) -> list[str]:
    allowed = ALLOWED[package] | {package}
    found = []
    for path in package_files(package):
        for line, module in imports(path):
            top = module.split(".", 1)[0]
            if top in PROJECT and top not in allowed:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_its_side_may(package: str) -> None:
    assert package_files(package), f"no source found for {package}"
    assert breaches(package) == []


def test_the_edge_never_imports_a_worker_and_the_workers_never_the_edge() -> None:
    assert "core_worker" not in ALLOWED["edge"]
    assert "edge" not in ALLOWED["core_worker"]
    assert all("edge" not in ALLOWED[p] and "core_worker" not in ALLOWED[p] for p in SHARED_RUNTIME | {"tasks"})


def test_tests_and_benchmarks_import_support_modules_never_a_test_module() -> None:
    found = []
    for path in package_files("tests") + package_files("bench"):
        for line, module in imports(path):
            names = module.split(".")
            if names[0] == "tests" and any(name.startswith("test_") for name in names):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert found == []


def test_the_contract_starts_no_thread_and_holds_no_connection() -> None:
    """``tasks`` is imported by every process: importing it must not start or connect anything."""
    found = []
    for path in package_files("tasks"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, module in imports(path):
            if module.split(".")[0] in {"threading", "multiprocessing", "concurrent"}:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
        for node in tree.body:  # module level: no client built at import
            value = node.value if isinstance(node, ast.Assign | ast.AnnAssign | ast.Expr) else None
            if isinstance(value, ast.Call) and any(word in ast.unparse(value.func)
                                                   for word in ("Redis", "redis_client", "Session", "PoolManager",
                                                                "register_at_fork", "Thread")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(value)[:60]}")
    assert found == []


def test_the_rules_see_lazy_imports(tmp_path: Path) -> None:
    """A function-level import counts: the parser walks the whole tree, not the module's head."""
    source = tmp_path / "tasks" / "probe.py"
    source.parent.mkdir()
    source.write_text("def later():\n    from edge import app\n    import core_worker.llm_worker\n"
                      "    from . import names\n", encoding="utf-8")
    assert {m for _, m in imports(source, tmp_path)} >= {"edge", "edge.app", "core_worker.llm_worker", "tasks.names"}
