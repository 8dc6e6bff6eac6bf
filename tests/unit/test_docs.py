"""The docs must describe the routes the edge actually serves."""

from __future__ import annotations

import re
from pathlib import Path

import fakeredis
import yaml

from edge.app import create_app
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def flask_routes(settings: Settings) -> set[str]:
    app = create_app(settings, client=fakeredis.FakeRedis(decode_responses=True))
    return {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
    }


def test_every_route_is_in_the_openapi_document(settings: Settings) -> None:
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    assert flask_routes(settings) == set(spec["paths"])


def test_every_route_is_in_the_api_guide(settings: Settings) -> None:
    guide = (ROOT / "docs" / "api.md").read_text()
    for route in flask_routes(settings):
        as_written = re.sub(r"\{(\w+)\}", lambda m: "<id>" if m.group(1) == "message_id" else f"<{m.group(1)}>", route)
        assert as_written in guide, route
