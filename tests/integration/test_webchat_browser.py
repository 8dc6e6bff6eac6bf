"""The web chat in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

Against the real system (gunicorn edge, Celery core worker, scripted echo
model): open /chat, send, see the reply, reload and see the history, upload a
file, and see the "unavailable" banner when Redis is down.

Selenium rather than playwright-core: the test stays in pytest and Python, and
Debian ships a chromedriver matching its chromium, so nothing is downloaded.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support.harness import RedisServer, System

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

MakeSystem = Callable[..., System]


def messages(driver: WebDriver) -> list[tuple[str, str]]:
    """(role, text without the screen-reader prefix) of every message shown."""
    shown = []
    for item in driver.find_elements(By.CSS_SELECTOR, "#log li"):
        role = "user" if "user" in (item.get_attribute("class") or "") else "assistant"
        who = item.find_element(By.CLASS_NAME, "who").get_attribute("textContent") or ""
        text = str(item.get_attribute("innerText") or "").strip()
        shown.append((role, text.removeprefix(who.strip()).strip()))
    return shown


def open_chat(driver: WebDriver, system: System) -> None:
    driver.get(f"{system.base_url}/chat")
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.documentElement.dataset.ready"))


def send(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "message")
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def test_send_see_the_reply_reload_and_see_the_history(make_system: MakeSystem, browser: WebDriver) -> None:
    system = make_system(LLM_BACKEND="tests.support.scripted_backend:factory")
    system.start_all(io_concurrency=2)
    open_chat(browser, system)
    assert browser.find_element(By.ID, "banner").is_displayed() is False

    send(browser, "hello from the browser")
    WebDriverWait(browser, 30).until(lambda d: len(messages(d)) == 2)
    assert messages(browser) == [("user", "hello from the browser"), ("assistant", "echo: hello from the browser")]
    assert browser.find_element(By.ID, "thinking").is_displayed() is False
    assert browser.switch_to.active_element.get_attribute("id") == "message"  # focus stays in the box

    send(browser, "and again")
    WebDriverWait(browser, 30).until(lambda d: len(messages(d)) == 4)

    browser.refresh()
    open_chat(browser, system)
    assert [text for _, text in messages(browser)] == [
        "hello from the browser", "echo: hello from the browser", "and again", "echo: and again"]

    upload = Path(tempfile.mkdtemp()) / "shopping-list.txt"
    upload.write_text("eggs\nmilk\n")
    browser.find_element(By.ID, "file").send_keys(str(upload))
    send(browser, "see my list")
    WebDriverWait(browser, 30).until(lambda d: len(messages(d)) == 6)
    question, answer = messages(browser)[4:]
    assert "shopping-list.txt" in question[1]
    assert answer[1].startswith("echo: see my list") and "[from shopping-list.txt] eggs" in answer[1]


def test_the_answer_is_shown_growing_then_final(make_system: MakeSystem, browser: WebDriver) -> None:
    system = make_system(LLM_BACKEND="tests.support.slow_backend:streaming_factory", SLOW_BACKEND_SECONDS="3")
    system.start_all(io_concurrency=2)
    open_chat(browser, system)
    question = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    send(browser, question)
    shown = WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#log li.partial") and messages(d)[-1][1])
    assert str(shown).endswith(" …") and f"echo: {question}".startswith(str(shown).removesuffix(" …"))
    WebDriverWait(browser, 30).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#log li.partial"))
    assert messages(browser) == [("user", question), ("assistant", f"echo: {question}")]


def test_a_new_conversation_never_shows_the_old_ones_answer(make_system: MakeSystem, browser: WebDriver) -> None:
    """Issue 24: "Start a new conversation" clicked before the answer arrived showed the old conversation's
    answer in the new one, and it stayed after a reload."""
    system = make_system(LLM_BACKEND="tests.support.slow_backend:streaming_factory", SLOW_BACKEND_SECONDS="4")
    system.start_all(io_concurrency=2)
    open_chat(browser, system)
    send(browser, "a question for the old conversation")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#log li.partial"))
    pending = browser.execute_script(
        "return JSON.parse(localStorage.getItem('switchboard.chat.v1')).messages[0].id")
    browser.find_element(By.ID, "new-chat").click()
    assert messages(browser) == []
    WebDriverWait(browser, 30).until(lambda d: requests.get(  # the old answer is written, and the page saw it
        f"{system.base_url}/v1/messages/{pending}", timeout=5, headers=token_of(d)).json()["status"] == "answered")
    time.sleep(1)  # the page's long poll returns with it now
    assert messages(browser) == []
    send(browser, "a question for the new one")
    WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException]).until(  # the DOM changes
        lambda d: len(messages(d)) == 2 and not d.find_elements(By.CSS_SELECTOR, "#log li.partial"))
    new = [("user", "a question for the new one"), ("assistant", "echo: a question for the new one")]
    assert messages(browser) == new
    browser.refresh()
    open_chat(browser, system)
    assert messages(browser) == new


def token_of(driver: WebDriver) -> dict[str, str]:
    token = driver.execute_script("return JSON.parse(localStorage.getItem('switchboard.chat.v1')).token")
    return {"Authorization": f"Bearer {token}"}


def test_a_clear_banner_when_the_system_is_down(make_system: MakeSystem, browser: WebDriver, tmp_path: Path) -> None:
    own_redis = RedisServer(tmp_path / "redis")
    try:
        system = make_system(redis_url=own_redis.url, LLM_BACKEND="tests.support.scripted_backend:factory")
        system.start_edge()
        open_chat(browser, system)
        own_redis.stop()
        send(browser, "is anyone there?")
        banner = browser.find_element(By.ID, "banner")
        WebDriverWait(browser, 30).until(lambda d: banner.is_displayed())
        assert "unavailable" in banner.text and banner.get_attribute("role") == "alert"
        assert "Not sent." in messages(browser)[-1][1]
    finally:
        own_redis.stop()
