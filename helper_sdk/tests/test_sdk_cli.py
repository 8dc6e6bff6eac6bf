"""``switchboard-helper run``: gunicorn as a real subprocess, registering with a FakeCore."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helper_sdk import Helper
from helper_sdk._cli import load_helper
from helper_sdk.testing import FakeCore
from sdk_sample_helper import PATH as SAMPLE_PATH

_OWN_SETTINGS = ("HOST", "PORT", "HELPER_PUBLIC_URL", "SWITCHBOARD_CORE_URL", "HELPER_REGISTRATION_TOKEN")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OWN_SETTINGS}
    env.update(extra)
    return env


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "helper.log"
    yield path


def start(args: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "helper_sdk", "run", *args], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def test_the_cli_serves_with_gunicorn_workers_that_follow_the_registration(log_file: Path) -> None:
    port = free_port()
    with FakeCore(heartbeat_interval=0.1, expires_in=10) as core:  # a loaded machine may pause a beat
        process = start(
            [f"{SAMPLE_PATH}:helper", "--port", str(port), "--core-url", core.url, "--workers", "2"],
            clean_env(HELPER_REGISTRATION_TOKEN=core.token),
            log_file,
        )
        try:
            manifest = core.wait_for_registration(timeout=15)
            assert manifest["url"] == f"http://127.0.0.1:{port}"
            core.wait_until(lambda: len(core.heartbeats) >= 2, what="heartbeats from the master")
            answers = [core.invoke("whoami", {}) for _ in range(12)]
            assert {a.status_code for a in answers} == {200}
            core.forget("sample")  # as if the core restarted: the master registers again, workers pick the new secret
            core.wait_for_registration(2, timeout=5)
            core.wait_until_ready("sample")  # the first heartbeat after registering: the new secret is in place
            again = [core.invoke("echo", {"message": "hi"}) for _ in range(12)]
            assert {a.status_code for a in again} == {200}, [a.text for a in again]
            pids = {a.json()["output"]["pid"] for a in answers}
            assert process.pid not in pids  # the master registers, the workers answer
            leaving = pids.pop()
            os.kill(leaving, signal.SIGTERM)  # a worker leaves (as with max_requests): the rest keep the secret
            core.wait_until(lambda: not process_exists(leaving), 10, "the worker to exit")
            after = [core.invoke("echo", {"message": "still"}) for _ in range(12)]
            assert {a.status_code for a in after} == {200}, [a.text for a in after]
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0
            assert core.deregistrations == ["sample"]
            assert len(core.registrations) == 2  # one per registration, not one per worker
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    log = log_file.read_text()
    assert "registered 'sample'" in log, log


def test_a_refused_token_stops_the_server_with_status_1(log_file: Path) -> None:
    with FakeCore() as core:
        process = start(
            [f"{SAMPLE_PATH}:helper", "--port", str(free_port()), "--core-url", core.url, "--token", "wrong"],
            clean_env(),
            log_file,
        )
        try:
            assert process.wait(15) == 1
        finally:
            if process.poll() is None:
                process.kill()
    assert "the core refused to register 'sample': 401" in log_file.read_text()


def test_without_a_token_it_explains_and_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "helper_sdk", "run", f"{SAMPLE_PATH}:helper"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 2
    assert "HELPER_REGISTRATION_TOKEN" in result.stderr


def test_helpers_are_found_by_module_or_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sdk_sample_helper

    assert load_helper("sdk_sample_helper:helper") is sdk_sample_helper.helper
    assert load_helper("sdk_sample_helper").name == "sample"
    (tmp_path / "made.py").write_text(
        "from helper_sdk import Helper\n"
        "def build():\n"
        "    helper = Helper('made')\n"
        "    helper.capability(input_schema={'type': 'object'}, output_schema={'type': 'object'},\n"
        "                      name='noop', description='d')(lambda data, context: {})\n"
        "    return helper\n"
        "not_a_helper = 3\n"
    )
    made = load_helper(f"{tmp_path / 'made.py'}:build")
    assert isinstance(made, Helper)
    assert made.name == "made"
    with pytest.raises(ImportError, match=r"not a helper_sdk\.Helper"):
        load_helper(f"{tmp_path / 'made.py'}:not_a_helper")
    with pytest.raises(ImportError, match="no attribute 'missing'"):
        load_helper(f"{tmp_path / 'made.py'}:missing")
    with pytest.raises(ImportError, match="no such file"):
        load_helper(f"{tmp_path / 'absent.py'}")


def test_helper_run_serves_registers_and_leaves_on_sigterm(log_file: Path) -> None:
    port = free_port()
    with FakeCore(heartbeat_interval=0.1, expires_in=10) as core:  # a loaded machine may pause a beat
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import sdk_sample_helper as s; "
            "s.helper.run(port=int(sys.argv[2]), core_url=sys.argv[3], token=sys.argv[4])"
        )
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", code, str(SAMPLE_PATH.parent), str(port), core.url, core.token],
                env=clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            core.wait_until_ready("sample", timeout=15)
            assert core.invoke("echo", {"message": "dev"}).json() == {"output": {"text": "dev"}}
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == 0
            assert core.deregistrations == ["sample"]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
