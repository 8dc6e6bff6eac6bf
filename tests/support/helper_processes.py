"""Helper processes against a running system: ``switchboard-helper run`` (the SDK's CLI under gunicorn).

``Helpers`` starts, lists and stops them (the ``helpers`` fixture of tests.support.fixtures wraps it);
``ask`` posts a message and waits for its answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from tests.support.harness import BIN, ROOT, Proc, System, free_port, wait_until

TOKEN = "test-registration-token"  # HELPER_REGISTRATION_TOKEN of the systems that start helpers
CALCULATOR, CONVERTER = "examples/helpers/calculator.py:helper", "examples/helpers/converter.py:helper"


class Helpers:
    """Starts helpers with ``switchboard-helper run`` against a running system."""

    def __init__(self, system: System, cli: Path = BIN / "switchboard-helper") -> None:
        self.system, self.cli = system, cli
        self.procs: dict[str, Proc] = {}

    def start(
        self, name: str, target: str, port: int | None = None, cli: Path | None = None,
        env: dict[str, str] | None = None, token: str = TOKEN,
    ) -> Proc:
        port = port or free_port()
        argv = [str(cli or self.cli), "run", target, "--port", str(port), "--core-url", self.system.base_url,
                "--token", token]
        # The secret is kept across restarts, as a deployment's state directory would: a helper killed and started
        # again proves the name is its own and is back at once (a held name is renewed only with its secret).
        secret_file = str(self.system.log_dir / f"helper-{name}.secret")
        env = {**self.system.env, "PYTHONPATH": str(ROOT), "HELPER_SECRET_FILE": secret_file, **(env or {})}
        env.pop("PORT", None)
        proc = self.procs[name] = Proc(f"helper-{name}", argv, env, self.system.log_dir)
        proc.port = port  # type: ignore[attr-defined]
        self.wait_listed(name)
        # Listed once the core stored the registration; the helper holds its secret a moment later.
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["registered"], 30,
                   f"helper {name} to hold its secret", 0.05)
        return proc

    def listed(self) -> dict[str, Any]:
        helpers = requests.get(f"{self.system.base_url}/v1/helpers", timeout=5).json()["helpers"]
        return {h["name"]: h for h in helpers}

    def wait_listed(self, name: str, timeout: float = 30) -> None:
        wait_until(lambda: name in self.listed(), timeout, f"helper {name} to register", 0.1)

    def health(self, name: str) -> dict[str, Any]:
        health: dict[str, Any] = self.listed()[name]["health"]
        return health

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def ask(system: System, text: str, user: str = "alice", **extra: Any) -> dict[str, Any]:
    response = system.post(user=user, text=text, **extra)
    assert response.status_code == 202, response.text
    record = system.status(response.json()["message_id"], wait=30)
    assert record["status"] == "answered", system.logs()
    return record
