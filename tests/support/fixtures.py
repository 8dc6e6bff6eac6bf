"""The fixtures every test directory shares, a pytest plugin (``pytest_plugins`` in tests/conftest.py).

- the edge in process: ``fake_redis``, ``settings``, ``celery_app`` (a ``RecordingCelery``), ``edge_app`` (a factory:
  ``edge_app(**overrides)``), and ``app``/``client`` built with it (a test module overrides ``app`` or ``client``
  when its edge needs other settings or a keyed client);
- real processes: ``redis_server``, ``own_redis``, ``clean_redis``, ``secret``, ``callbacks``, ``tiny_model_file``,
  ``make_system``, and ``helpers`` (helper processes against the module's ``system``);
- fake providers shared by several modules: ``fake_telegram`` (one per module);
- ``browser``: a headless Chromium (Selenium), skipped when Debian's chromium or chromedriver is absent.

The LLM fixtures (``tiny_gguf``, ``llama_server``, ``smollm2_gguf``) are the plugin ``tests.support.llm_fixtures``.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from core_worker.tiny_model import write_tiny_model
from edge.app import create_app
from tasks.settings import Settings, load_settings
from tasks.signing import new_secret
from tests.support.edge import EdgeApp, RecordingCelery
from tests.support.factories import API_KEYS
from tests.support.fake_telegram import FakeTelegram
from tests.support.harness import CallbackReceiver, RedisServer, System, system_env
from tests.support.helper_processes import Helpers

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


# --------------------------------------------------------------------------- the edge in process
@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    yield client
    client.flushall()


@pytest.fixture
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    files = tmp_path_factory.mktemp("files")  # uploads and mail attachments (FILES_DIR), never the repository's
    return load_settings({}, switchboard_secret="whsec_" + "A" * 43 + "=", files_dir=str(files), api_keys=API_KEYS)


@pytest.fixture
def celery_app(fake_redis: fakeredis.FakeRedis) -> RecordingCelery:
    return RecordingCelery(fake_redis)


@pytest.fixture
def edge_app(settings: Settings, fake_redis: fakeredis.FakeRedis, celery_app: RecordingCelery) -> EdgeApp:
    """``edge_app(**overrides)``: the edge over ``settings`` (or the settings given first) with ``overrides``."""

    def make(base: Settings | None = None, /, **overrides: Any) -> Flask:
        configured = (settings if base is None else base).replace(**overrides)
        return create_app(configured, client=fake_redis, celery=celery_app)

    return make


@pytest.fixture
def app(edge_app: EdgeApp) -> Flask:
    return edge_app()


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    """A test client without a client key (channel webhooks); modules of the JSON API use ``keyed`` clients."""
    with app.test_client() as test_client:
        yield test_client


# --------------------------------------------------------------------------- real processes
@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.gguf"
    write_tiny_model(path)
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (AOF on), for a test that kills, freezes or restarts it."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.proc.signal_group(signal.SIGCONT)
    server.stop()


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    redis_server.client().flushall()
    return redis_server


@pytest.fixture(scope="session")
def secret() -> str:
    return new_secret()


@pytest.fixture
def callbacks(secret: str) -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver(secret)
    yield receiver
    receiver.close()


@pytest.fixture
def make_system(
    clean_redis: RedisServer, secret: str, tiny_model_file: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[object]:
    systems: list[System] = []

    def make(redis_url: str | None = None, **overrides: str) -> System:
        env = system_env(redis_url or clean_redis.url, secret, tiny_model_file, **overrides)
        system = System(env, tmp_path)
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.stop()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(system.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def helpers(system: System) -> Iterator[Helpers]:
    """Helper processes (``switchboard-helper run``) against the requesting module's ``system``."""
    started = Helpers(system)
    yield started
    for proc in started.procs.values():  # a helper the test froze (SIGSTOP) stops only once resumed
        proc.signal_group(signal.SIGCONT)
    started.stop()


# --------------------------------------------------------------------------- fake providers, a browser
@pytest.fixture(scope="module")
def fake_telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram()
    yield fake
    fake.close()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian chromium and chromium-driver are not installed (.ci/run installs them)")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1000,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
