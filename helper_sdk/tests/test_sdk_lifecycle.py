"""The real Lifecycle against a FakeCore: register, heartbeat, re-register, back off, leave."""

from __future__ import annotations

import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from helper_sdk import Helper, Lifecycle, RegistrationError
from helper_sdk.testing import FakeCore, new_secret

PUBLIC_URL = "http://127.0.0.1:9"

MakeLifecycle = Callable[..., Lifecycle]


@pytest.fixture
def make_lifecycle(fake_core: FakeCore, sample_helper: Helper) -> Iterator[MakeLifecycle]:
    made: list[Lifecycle] = []

    def make(**overrides: Any) -> Lifecycle:
        options: dict[str, Any] = {
            "core_url": fake_core.url,
            "public_url": PUBLIC_URL,
            "token": fake_core.token,
            "min_retry_delay": 0.01,
            "max_retry_delay": 0.1,
            "request_timeout": 2.0,
        }
        options.update(overrides)
        lifecycle = Lifecycle(sample_helper, **options)
        made.append(lifecycle)
        return lifecycle

    yield make
    for lifecycle in made:
        lifecycle.stop()


def posts(core: FakeCore) -> list[Any]:
    return [r for r in core.requests if r.method == "POST"]


def test_it_registers_heartbeats_and_leaves_on_stop(fake_core: FakeCore, make_lifecycle: MakeLifecycle) -> None:
    lifecycle = make_lifecycle()
    lifecycle.start()
    assert lifecycle.wait_until_registered(5)
    assert lifecycle.current_secret() == fake_core.helpers["sample"].secret
    assert lifecycle.heartbeat_interval == 0.05
    fake_core.wait_until(lambda: len(fake_core.heartbeats) >= 3, what="three heartbeats")
    lifecycle.stop()
    assert fake_core.deregistrations == ["sample"]
    assert "sample" not in fake_core.helpers
    assert lifecycle.current_secret() is None
    beats = len(fake_core.heartbeats)
    time.sleep(0.15)
    assert len(fake_core.heartbeats) == beats


def test_a_heartbeat_follows_each_registration_at_once(sample_helper: Helper, make_lifecycle: MakeLifecycle) -> None:
    with FakeCore(heartbeat_interval=30) as core:
        lifecycle = make_lifecycle(core_url=core.url)
        lifecycle.start()
        assert core.wait_until_ready("sample").secret == lifecycle.current_secret()
        assert core.heartbeats == ["sample"]
        lifecycle.stop()


def test_the_registration_body_is_the_manifest(
    fake_core: FakeCore, make_lifecycle: MakeLifecycle, sample_helper: Helper
) -> None:
    make_lifecycle(public_url=PUBLIC_URL + "/").start()
    body = fake_core.wait_for_registration()
    assert body == sample_helper.manifest(PUBLIC_URL)
    assert body["url"] == PUBLIC_URL


def test_a_forgotten_helper_registers_again_at_once_with_a_new_secret(
    fake_core: FakeCore, make_lifecycle: MakeLifecycle
) -> None:
    lifecycle = make_lifecycle()
    lifecycle.start()
    assert lifecycle.wait_until_registered(5)
    first = lifecycle.current_secret()
    fake_core.forget("sample")
    fake_core.wait_for_registration(2)
    fake_core.wait_until(lambda: lifecycle.current_secret() == fake_core.helpers["sample"].secret, what="new secret")
    assert lifecycle.current_secret() != first
    assert any(r.status == 404 for r in fake_core.requests if r.method == "PUT")


def test_a_heartbeat_refused_for_a_wrong_secret_waits_for_that_registration_to_expire(
    make_lifecycle: MakeLifecycle,
) -> None:
    with FakeCore(heartbeat_interval=0.05, expires_in=0.5) as core:
        lifecycle = make_lifecycle(core_url=core.url)
        lifecycle.start()
        assert lifecycle.wait_until_registered(5)
        core.helpers["sample"].secret = new_secret()  # someone else holds the name now (and never heartbeats)
        core.wait_until(lambda: any(r.status == 409 for r in core.requests), what="the held name refused")
        core.wait_until(lambda: lifecycle.current_secret() == core.helpers["sample"].secret, what="the name back")
        assert any(r.status == 401 for r in core.requests if r.method == "PUT")
        lifecycle.stop()


def test_a_restarted_helper_with_a_kept_secret_file_takes_its_name_back_at_once(
    make_lifecycle: MakeLifecycle, tmp_path: Path
) -> None:
    path = tmp_path / "kept" / "secret"
    with FakeCore(heartbeat_interval=0.05, expires_in=30) as core:
        first = make_lifecycle(core_url=core.url, secret_file=path)
        first.start()
        assert first.wait_until_registered(5)
        held = path.read_text()
        first.stop(deregister=False)  # killed: it never left, the core still holds its registration
        path.parent.mkdir(exist_ok=True)
        path.write_text(held)
        again = make_lifecycle(core_url=core.url, secret_file=path)
        again.start()
        assert again.wait_until_registered(5)
        posts = [r for r in core.requests if r.method == "POST"]
        assert [r.status for r in posts] == [201, 201]  # no 409: the kept secret proved the name is its own
        assert path.read_text() == again.current_secret() == core.helpers["sample"].secret != held
        again.stop()


def test_a_409_waits_the_cores_retry_after_not_its_own_backoff(sample_helper: Helper) -> None:
    with FakeCore(heartbeat_interval=0.05, expires_in=2) as core:
        other = requests.post(f"{core.url}/v1/helpers", json=sample_helper.manifest("http://127.0.0.1:10"),
                              headers={"Authorization": f"Bearer {core.token}"}, timeout=5)
        assert other.status_code == 201
        lifecycle = Lifecycle(sample_helper, core_url=core.url, public_url=PUBLIC_URL, token=core.token,
                              min_retry_delay=0.01, max_retry_delay=30)
        lifecycle.start()
        assert lifecycle.wait_until_registered(10)
        refused = [r for r in core.requests if r.method == "POST" and r.status == 409]
        # A 0.01 s backoff would have knocked dozens of times in those ~2 s; Retry-After (2 s) asks once or twice.
        assert 1 <= len(refused) <= 3
        lifecycle.stop()


def test_it_backs_off_while_the_core_answers_503_then_registers(
    fake_core: FakeCore, make_lifecycle: MakeLifecycle
) -> None:
    fake_core.available = False
    lifecycle = make_lifecycle()
    started = time.monotonic()
    lifecycle.start()
    deadline = started + 10
    while len(posts(fake_core)) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    attempts = posts(fake_core)
    elapsed = time.monotonic() - started
    assert not lifecycle.registered
    assert len(attempts) >= 4
    assert all(a.status == 503 for a in attempts)
    # Every pause is at least half the 0.01 s floor, so a backing-off client cannot have made more attempts
    # than this; a busy loop would have made thousands. Load only lowers the count, so this holds anywhere.
    assert len(attempts) <= elapsed / 0.005 + 2
    fake_core.available = True
    assert lifecycle.wait_until_registered(5)


def test_the_pause_doubles_from_the_floor_to_the_ceiling_with_jitter_below(make_lifecycle: MakeLifecycle) -> None:
    lifecycle = make_lifecycle()  # floor 0.01 s, ceiling 0.1 s
    for failures, ceiling in [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.08), (5, 0.1), (40, 0.1)]:
        pauses = [lifecycle._backoff(failures) for _ in range(200)]
        assert all(ceiling / 2 <= p <= ceiling for p in pauses), failures
        assert max(pauses) - min(pauses) > ceiling / 10  # jittered, so helpers restarted together spread out


def test_it_keeps_trying_a_core_that_is_not_running(make_lifecycle: MakeLifecycle) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    lifecycle = make_lifecycle(core_url=f"http://127.0.0.1:{closed}")
    lifecycle.start()
    assert not lifecycle.wait_until_registered(0.3)
    assert lifecycle.error is None
    started = time.monotonic()
    lifecycle.stop()
    assert time.monotonic() - started < 1


def test_a_refused_token_is_fatal(fake_core: FakeCore, make_lifecycle: MakeLifecycle) -> None:
    refusals: list[RegistrationError] = []
    lifecycle = make_lifecycle(token="wrong", on_fatal=refusals.append)
    lifecycle.start()
    assert not lifecycle.wait_until_registered(5)
    assert lifecycle.error is not None
    assert lifecycle.error.status == 401
    assert refusals == [lifecycle.error]
    time.sleep(0.1)
    assert len(posts(fake_core)) == 1


def test_a_malformed_manifest_is_fatal_with_the_cores_field_errors(
    fake_core: FakeCore, make_lifecycle: MakeLifecycle
) -> None:
    lifecycle = make_lifecycle()
    lifecycle.manifest["capabilities"] = []
    lifecycle.start()
    assert not lifecycle.wait_until_registered(5)
    assert lifecycle.error is not None
    assert lifecycle.error.status == 400
    assert lifecycle.error.body == {
        "error": "malformed manifest",
        "fields": {"capabilities": ["must be a list of 1 to 32 capabilities"]},
    }
    assert "malformed manifest" in str(lifecycle.error)


def test_a_name_held_by_another_live_helper_is_retried_until_it_expires(
    sample_helper: Helper, make_lifecycle: MakeLifecycle
) -> None:
    with FakeCore(heartbeat_interval=0.05, expires_in=0.3) as core:
        other = requests.post(
            f"{core.url}/v1/helpers",
            json=sample_helper.manifest("http://127.0.0.1:10"),
            headers={"Authorization": f"Bearer {core.token}"},
            timeout=5,
        )
        assert other.status_code == 201
        lifecycle = make_lifecycle(core_url=core.url)
        lifecycle.start()
        assert lifecycle.wait_until_registered(3)
        assert any(r.status == 409 for r in core.requests)
        assert core.helpers["sample"].url == PUBLIC_URL
        lifecycle.stop()


def test_heartbeats_failing_keep_the_registration(make_lifecycle: MakeLifecycle) -> None:
    with FakeCore(heartbeat_interval=0.05, expires_in=10) as core:
        lifecycle = make_lifecycle(core_url=core.url)
        lifecycle.start()
        assert lifecycle.wait_until_registered(5)
        secret = lifecycle.current_secret()
        core.available = False
        time.sleep(0.3)
        assert lifecycle.current_secret() == secret
        core.available = True
        beats = len(core.heartbeats)
        core.wait_until(lambda: len(core.heartbeats) > beats, what="heartbeats to resume")
        assert len(core.registrations) == 1
        lifecycle.stop()


def test_the_secret_file_follows_the_registration(
    fake_core: FakeCore, make_lifecycle: MakeLifecycle, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    lifecycle = make_lifecycle(secret_file=path)
    lifecycle.start()
    assert lifecycle.wait_until_registered(5)
    assert path.read_text() == lifecycle.current_secret()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fake_core.forget("sample")
    fake_core.wait_for_registration(2)
    fake_core.wait_until(lambda: path.read_text() == fake_core.helpers["sample"].secret, what="secret file update")
    lifecycle.stop()
    assert not path.exists()


def test_stop_is_idempotent_and_a_forked_copy_does_not_leave(
    fake_core: FakeCore, make_lifecycle: MakeLifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    lifecycle = make_lifecycle()
    lifecycle.start()
    assert lifecycle.wait_until_registered(5)
    with monkeypatch.context() as patch:
        patch.setattr("helper_sdk._lifecycle.os.getpid", lambda: -1)  # as in a gunicorn worker running atexit
        lifecycle.stop()
    assert fake_core.deregistrations == []
    assert lifecycle.registered
    lifecycle.stop()
    lifecycle.stop()
    assert fake_core.deregistrations == ["sample"]


def test_a_lifecycle_starts_once(make_lifecycle: MakeLifecycle) -> None:
    lifecycle = make_lifecycle()
    lifecycle.start()
    with pytest.raises(RuntimeError):
        lifecycle.start()


def test_a_token_is_required(make_lifecycle: MakeLifecycle) -> None:
    with pytest.raises(RegistrationError, match="no registration token"):
        make_lifecycle(token="")


def test_a_registered_helper_answers_the_cores_signed_calls(fake_core: FakeCore, sample_helper: Helper) -> None:
    lifecycle: Lifecycle | None = None
    server = make_server(
        "127.0.0.1", 0, sample_helper.create_app(lambda: lifecycle.current_secret() if lifecycle else None)
    )
    threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok", "registered": False}
        lifecycle = Lifecycle(sample_helper, core_url=fake_core.url, public_url=url, token=fake_core.token)
        lifecycle.start()
        assert lifecycle.wait_until_registered(5)
        response = fake_core.invoke("echo", {"message": "hello", "times": 2})
        assert (response.status_code, response.json()) == (200, {"output": {"text": "hello hello"}})
        assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok", "registered": True}
        lifecycle.stop()
        assert fake_core.deregistrations == ["sample"]
    finally:
        if lifecycle is not None:
            lifecycle.stop()
        server.shutdown()
        server.server_close()
