"""Each Procfile line starts its own entry module, and that module's role names the queue the line consumes."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from celery_runtime.worker_role import WorkerRole

ROOT = Path(__file__).resolve().parents[2]
CELERY_LINE = re.compile(r"^(\w+): celery -A ([\w.]+) worker -Q (\S+) ")


def procfile_workers() -> list[tuple[str, str, str]]:
    lines = (ROOT / "Procfile").read_text(encoding="utf-8").splitlines()
    return [m.groups() for m in map(CELERY_LINE.match, lines) if m]  # type: ignore[misc]


def test_every_procfile_line_has_its_own_entry_module() -> None:
    commands = [line.split(":", 1)[1].split()[:3] for line in (ROOT / "Procfile").read_text().splitlines() if line]
    modules = [c[2] if c[0] == "celery" else c[-1] for c in commands]
    assert len(modules) == len(set(modules)), modules
    assert {name for name, _, _ in procfile_workers()} == {"core", "io", "convert", "helpers"}


@pytest.mark.parametrize(("name", "module", "queue"), procfile_workers())
def test_each_worker_module_declares_the_queue_its_line_consumes(name: str, module: str, queue: str) -> None:
    role = importlib.import_module(module).ROLE
    assert isinstance(role, WorkerRole) and role.queue == queue
    role.check([queue])


def test_a_worker_refuses_a_queue_that_is_not_its_own() -> None:
    role = WorkerRole("LLM", "core")
    with pytest.raises(SystemExit, match="consumes the queue 'core' only"):
        role.check(["core", "deliver"])
    with pytest.raises(SystemExit):
        role.check(["deliver"])
    helper = WorkerRole("helper", "helpers", extra_queue_prefix="helper.")
    helper.check(["helpers", "helper.calculator"])  # helper queues join at run time
    with pytest.raises(SystemExit):
        helper.check(["helpers", "convert"])
