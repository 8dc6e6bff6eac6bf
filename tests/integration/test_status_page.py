"""The status page in a real headless Chromium against the real system.

It shows the live workers (by heartbeat), the queues with their live-worker
counts, the key numbers after a message went through, a dead letter once a
reply is refused, refreshes on its own, and obeys its CSP (no console errors).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.harness import CallbackReceiver, System, wait_until

pytestmark = pytest.mark.integration

MakeSystem = Callable[..., System]


def cell_texts(driver: WebDriver, table: str) -> list[list[str]]:
    """The table's cells, read in one script call (the page re-renders while we read)."""
    rows: list[list[str]] = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map("
        "  tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent.trim()));",
        f"#{table} tbody tr")
    return rows


def number(driver: WebDriver, name: str) -> str:
    value: str = driver.execute_script(
        "const dd = document.querySelector(arguments[0]); return dd ? dd.textContent : '';",
        f'#numbers div[data-name="{name}"] dd')
    return value


def test_the_status_page_shows_workers_queues_numbers_and_dead_letters(
    make_system: MakeSystem, browser: WebDriver, callbacks: CallbackReceiver
) -> None:
    system = make_system(LLM_BACKEND="tests.support.scripted_backend:factory", STATUS_PAGE_REFRESH="0.5",
                         WORKER_HEARTBEAT_INTERVAL="0.5", METRICS_FLUSH_INTERVAL="0.2")
    system.start_all(io_concurrency=2)
    answered = system.post(user="fay", text="hello", reply_url=callbacks.url).json()["message_id"]
    wait_until(lambda: len(callbacks.for_message(answered)) == 1, 60, "the first reply")

    browser.get(f"{system.base_url}/status")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.execute_script("return document.documentElement.dataset.refreshes"))
    wait.until(lambda d: len([r for r in cell_texts(d, "workers") if "alive" in r]) >= 4)
    # The pool process reports its model in its own heartbeat, which may land a refresh later.
    wait.until(lambda d: any("scripted" in row[4] and "(loaded)" in row[4] for row in cell_texts(d, "workers")))
    workers = cell_texts(browser, "workers")
    assert any(row[0].startswith("core@") and row[2] == "core" for row in workers)
    for name, queue in (("io", "deliver"), ("convert", "convert"), ("helpers", "helpers")):  # one row each
        rows = [row for row in workers if row[0].startswith(f"{name}@")]
        assert rows and rows[0][2] == queue and rows[0][3] == "threads \u00d72", workers
    assert any("scripted" in row[4] and "(loaded)" in row[4] for row in workers)  # the core's pool process

    queues = {row[0]: row[1:] for row in cell_texts(browser, "queues")}
    assert queues["core"] == ["0", "1"] and queues["deliver"] == ["0", "1"] and queues["convert"] == ["0", "1"]
    wait.until(lambda d: number(d, "replies delivered") == "1")
    assert number(browser, "messages accepted") == "1"

    callbacks.status = 400  # the next reply is refused: a dead letter appears without reloading the page
    refused = system.post(user="fay", text="again", reply_url=callbacks.url).json()["message_id"]
    wait.until(lambda d: any(refused in row for row in cell_texts(d, "dead-letters")))
    (row,) = cell_texts(browser, "dead-letters")
    assert row[1] == "delivery" and "HTTP 400" in row[3]
    assert browser.execute_script("return document.getElementById('dead-count').textContent") == "(1)"
    assert browser.execute_script("return document.getElementById('banner').hidden") is True

    errors = [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]  # type: ignore[attr-defined]
    assert errors == []


def test_with_an_operator_token_the_page_works_through_the_browsers_login(
    make_system: MakeSystem, browser: WebDriver
) -> None:
    """The page and its ``/v1/status`` reads are refused without the token; the browser's Basic login (here
    the credentials in the URL, as a person typing them into the prompt) opens both."""
    token = "operator-token-for-the-page"
    system = make_system(LLM_BACKEND="tests.support.scripted_backend:factory", STATUS_PAGE_REFRESH="0.5",
                         WORKER_HEARTBEAT_INTERVAL="0.5", OPERATOR_TOKEN=token)
    system.start_all(io_concurrency=1)
    import requests

    assert requests.get(f"{system.base_url}/v1/status", timeout=5).status_code == 401
    browser.get(system.base_url.replace("http://", f"http://operator:{token}@") + "/status")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.execute_script("return document.documentElement.dataset.refreshes"))
    wait.until(lambda d: len([r for r in cell_texts(d, "workers") if "alive" in r]) >= 4)
    # Later visits of the plain address use the browser's cached login for the realm, the page's reads too.
    browser.get(f"{system.base_url}/status")
    wait.until(lambda d: int(d.execute_script("return document.documentElement.dataset.refreshes") or 0) >= 2)
