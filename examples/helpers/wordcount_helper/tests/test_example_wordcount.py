"""The packaged wordcount helper, tested with helper_sdk.testing only."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helper_sdk.testing import HelperClient

from wordcount_helper import count, helper


@pytest.fixture
def client() -> HelperClient:
    return HelperClient(helper)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP, and its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_words_lines_and_characters_are_counted() -> None:
    assert count("one two  three\nfour\n") == {"words": 4, "lines": 2, "characters": 20, "characters_no_spaces": 15}


def test_empty_text_counts_nothing() -> None:
    assert count("") == {"words": 0, "lines": 0, "characters": 0, "characters_no_spaces": 0}


def test_the_core_gets_the_counts(client: HelperClient) -> None:
    response = client.invoke("wordcount", {"text": "Hello, wide world"})
    assert response.status_code == 200
    assert response.json == {"output": {"words": 3, "lines": 1, "characters": 17, "characters_no_spaces": 15}}


def test_text_is_required(client: HelperClient) -> None:
    response = client.invoke("wordcount", {})
    assert response.status_code == 422
    assert response.json["fields"] == {"text": ["Missing data for required field."]}


def test_a_plain_text_attachment_is_fetched_and_counted(client: HelperClient, files: tuple[Path, str]) -> None:
    directory, base = files
    (directory / "notes.txt").write_text("one two three\nfour five\n")
    descriptor = {"url": f"{base}/notes.txt", "mime": "text/plain", "name": "notes.txt", "size": None}
    response = client.invoke("wordcount_file", descriptor)
    assert response.status_code == 200, response.json
    assert response.json["output"]["words"] == 5
    assert response.json["output"]["lines"] == 2


def test_a_missing_file_is_the_persons_problem_not_a_crash(client: HelperClient, files: tuple[Path, str]) -> None:
    _, base = files
    response = client.invoke("wordcount_file", {"url": f"{base}/absent.txt"})
    assert response.status_code == 422
    assert response.json == {"error": "could not fetch the file: HTTP 404"}


def test_it_declares_plain_text_and_model_replies() -> None:
    text, file = helper.manifest("http://127.0.0.1:8103")["capabilities"]
    assert (text["name"], text["accepts"]) == ("wordcount", [])
    assert (file["name"], file["accepts"], file["timeout"]) == ("wordcount_file", ["text/plain"], 30.0)
    assert text["reply"] == file["reply"] == "model"
    assert text["input_schema"]["required"] == ["text"]  # so "/wordcount some text" fills it
