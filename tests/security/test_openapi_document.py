"""``GET /openapi.json`` serves the canonical document, and an installed edge carries the same file."""

from __future__ import annotations

from pathlib import Path

import yaml
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parents[2]


def test_openapi_json_is_docs_openapi_yaml(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text(encoding="utf-8"))


def test_the_packaged_copy_is_a_link_to_the_canonical_file() -> None:
    """edge/openapi.yaml is package data (pyproject) and a symlink, so the two can never drift apart."""
    packaged = ROOT / "edge" / "openapi.yaml"
    assert packaged.is_symlink() and packaged.resolve() == (ROOT / "docs" / "openapi.yaml").resolve()
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    package_data = pyproject.split("[tool.setuptools.package-data]")[1].split("\n[")[0]
    assert '"openapi.yaml"' in package_data


def test_every_rate_limited_route_documents_its_429(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    for path, method in [("/v1/messages", "post"), ("/v1/messages/{message_id}", "get"), ("/v1/files", "post"),
                         ("/v1/helpers", "post"), ("/v1/channels/twilio/sms", "post"),
                         ("/v1/channels/telegram", "post"), ("/v1/channels/slack/events", "post"),
                         ("/v1/channels/email/mailgun", "post"), ("/v1/channels/email/sendgrid", "post")]:
        assert "429" in paths[path][method]["responses"], (path, method)
