"""Wiring: an upload with a convertible file goes to queue `convert` first, unless a helper accepts its type."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tasks.names import CONVERT_ATTACHMENTS, HANDLE_MESSAGE
from tests.support.edge import EdgeApp, RecordingCelery
from tests.support.factories import keyed, manifest


@pytest.fixture
def app(edge_app: EdgeApp) -> Flask:
    return edge_app(media_max_image_bytes=500)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with keyed(app.test_client()) as test_client:
        yield test_client


def upload(client: FlaskClient, data: bytes, name: str, mime: str) -> TestResponse:
    return client.post("/v1/files", data={"user": "u1", "file": (io.BytesIO(data), name, mime)},
                       content_type="multipart/form-data")


def test_a_convertible_upload_is_sent_to_the_convert_queue(
    client: FlaskClient, app: Flask, celery_app: RecordingCelery
) -> None:
    response = upload(client, b"%PDF-1.4 ...", "invoice.pdf", "application/pdf")
    assert response.status_code == 202
    message_id = (response.json or {})["message_id"]
    assert celery_app.sent == [(CONVERT_ATTACHMENTS, [message_id, "api:tests:u1"])]
    record = app.extensions["switchboard"].messages.get(message_id)
    assert record.stage == "converting" and record.status == "queued"


def test_an_upload_a_helper_accepts_is_left_to_the_helper(
    client: FlaskClient, app: Flask, celery_app: RecordingCelery
) -> None:
    helper = manifest()
    helper["capabilities"][0]["accepts"] = ["image/*"]
    app.extensions["switchboard"].helpers.register(helper, "whsec_x")
    response = upload(client, b"\x89PNG...", "photo.png", "image/png")
    assert response.status_code == 202
    assert celery_app.sent == [(HANDLE_MESSAGE, [(response.json or {})["message_id"], "api:tests:u1"])]


def test_a_file_over_its_types_limit_is_413(client: FlaskClient, celery_app: RecordingCelery) -> None:
    response = upload(client, b"x" * 501, "photo.png", "image/png")
    assert response.status_code == 413 and "image/png" in (response.json or {})["error"]
    assert celery_app.sent == []


def test_an_unconvertible_type_goes_through_the_same_step_which_names_the_problem(
    client: FlaskClient, app: Flask, celery_app: RecordingCelery
) -> None:
    response = upload(client, b"\xd0\xcf\x11\xe0", "old.doc", "application/msword")
    assert response.status_code == 202
    message_id = (response.json or {})["message_id"]
    assert celery_app.sent == [(CONVERT_ATTACHMENTS, [message_id, "api:tests:u1"])]  # step.py: "not supported"
    record = app.extensions["switchboard"].messages.get(message_id)
    assert record.stage == "converting"
