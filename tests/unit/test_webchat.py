"""The web chat page is served as static files, and uploads (POST /v1/files) become messages with an attachment."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.edge import EdgeApp
from tests.support.factories import keyed


@pytest.fixture
def app(edge_app: EdgeApp) -> Flask:
    return edge_app(files_max_bytes=1000)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with keyed(app.test_client()) as test_client:
        yield test_client


def test_the_chat_page_and_its_assets_are_served_without_a_build(client: FlaskClient) -> None:
    page = client.get("/chat")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'role="log"' in html and 'aria-live="polite"' in html and '<label for="message"' in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for asset, mime in (("chat.js", "text/javascript"), ("chat.css", "text/css")):
        response = client.get(f"/chat/static/{asset}")
        assert response.status_code == 200 and response.mimetype == mime
        response.close()
    assert client.get("/chat/static/nope.js").status_code == 404


def upload(client: FlaskClient, data: bytes = b"hello file", name: str = "notes.txt", mime: str = "text/plain",
           **fields: str) -> TestResponse:
    form = {"user": "web-1", **fields}
    return client.post("/v1/files", data={**form, "file": (io.BytesIO(data), name, mime)},
                       content_type="multipart/form-data")


def test_an_upload_is_queued_with_its_file_and_a_note_for_the_model(client: FlaskClient, app: Flask) -> None:
    response = upload(client, text="what does it say?", session="s1")
    assert response.status_code == 202, response.json
    body = response.json or {}
    assert body["session_id"] == "api:tests:web-1#s1" and body["file"]["mime"] == "text/plain"
    record = app.extensions["switchboard"].messages.get(body["message_id"])
    # A convertible file goes through the convert step (docs/media.md) instead of a "cannot be read" note.
    assert record.envelope["text"] == "what does it say?" and record.stage == "converting"
    (attachment,) = record.envelope["attachments"]
    assert attachment["name"] == "notes.txt" and attachment["size"] == 10
    path = attachment["url"].split("127.0.0.1:8000", 1)[1]
    fetched = client.get(path)
    assert fetched.status_code == 200 and fetched.data == b"hello file" and fetched.mimetype == "text/plain"


def test_upload_errors_are_json(client: FlaskClient) -> None:
    assert upload(client, data=b"x" * 1001).status_code == 413
    assert upload(client, name="tool.exe", mime="application/x-msdownload").status_code == 415
    missing_user = client.post("/v1/files", data={"file": (io.BytesIO(b"x"), "a.txt")},
                               content_type="multipart/form-data")
    assert missing_user.status_code == 400 and "user" in (missing_user.json or {})["fields"]
    no_file = client.post("/v1/files", data={"user": "u"}, content_type="multipart/form-data")
    assert no_file.status_code == 400 and "file" in (no_file.json or {})["fields"]
    assert client.post("/v1/files", json={"user": "u"}).status_code == 415
    blocked = upload(client, reply_url="http://10.1.2.3/hook")
    assert blocked.status_code == 400


def test_an_octet_stream_upload_gets_its_type_from_its_name(client: FlaskClient) -> None:
    response = upload(client, data=b"%PDF-1.4", name="report.pdf", mime="application/octet-stream")
    assert (response.json or {})["file"]["mime"] == "application/pdf"


def test_unknown_files_are_404(client: FlaskClient) -> None:
    assert client.get("/v1/files/" + "0" * 32).status_code == 404
    assert client.get("/v1/files/../../etc").status_code == 404
