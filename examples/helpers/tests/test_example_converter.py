"""The converter example: units and time zones, answered as data for the model to phrase."""

from __future__ import annotations

from typing import Any

import pytest
from helper_sdk.testing import HelperClient

from converter import helper


@pytest.fixture
def client() -> HelperClient:
    return HelperClient(helper)


def units(client: HelperClient, value: float, source: str, target: str) -> Any:
    return client.invoke("convert_units", {"value": value, "from_unit": source, "to_unit": target})


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (5, "km", "mi", 3.10685596),
        (1, "Miles", "feet", 5280),
        (100, "°C", "F", 212),
        (32, "fahrenheit", "celsius", 0),
        (0, "K", "C", -273.15),
        (2, "lbs", "kg", 0.90718474),
        (1, "gallon", "l", 3.785411784),
        (100, "km/h", "mph", 62.13711922),
    ],
)
def test_units_are_converted(client: HelperClient, value: float, source: str, target: str, expected: float) -> None:
    response = units(client, value, source, target)
    assert response.status_code == 200, response.json
    assert response.json["output"]["value"] == pytest.approx(expected)


def test_the_output_is_data_for_the_model(client: HelperClient) -> None:
    output = units(client, 5, "km", "m").json["output"]
    assert output == {"value": 5000.0, "unit": "m", "quantity": "length", "summary": "5 km = 5000 m"}
    assert {c["reply"] for c in helper.manifest("http://127.0.0.1:8102")["capabilities"]} == {"model"}


def test_incompatible_units_are_refused(client: HelperClient) -> None:
    response = units(client, 1, "kg", "km")
    assert response.status_code == 422
    assert response.json["error"] == "cannot convert mass (kg) to length (km)"
    assert units(client, 1, "C", "m").status_code == 422


def test_unknown_units_are_refused(client: HelperClient) -> None:
    response = units(client, 1, "furlong", "m")
    assert response.status_code == 422
    assert response.json["error"].startswith("unknown unit 'furlong'")


def test_input_is_checked_against_the_json_schema(client: HelperClient) -> None:
    response = client.invoke("convert_units", {"value": "five", "from_unit": "km"})
    assert response.status_code == 422
    assert response.json["fields"] == {
        "value": ["Not a valid number."],
        "to_unit": ["Missing data for required field."],
    }


def test_times_are_converted_across_zones_with_daylight_saving(client: HelperClient) -> None:
    summer = client.invoke(
        "convert_time",
        {"time": "14:30", "date": "2025-07-01", "from_zone": "Europe/Paris", "to_zone": "America/New_York"},
    )
    assert summer.status_code == 200, summer.json
    assert summer.json["output"]["time"] == "2025-07-01T08:30:00-04:00"
    assert summer.json["output"]["utc_offset"] == "-04:00"
    winter = client.invoke("convert_time", {"time": "2025-01-15T14:30", "from_zone": "Europe/Paris", "to_zone": "UTC"})
    assert winter.json["output"]["time"] == "2025-01-15T13:30:00+00:00"


def test_an_explicit_offset_wins_over_the_source_zone(client: HelperClient) -> None:
    response = client.invoke(
        "convert_time", {"time": "2025-01-15T12:00+00:00", "from_zone": "Asia/Tokyo", "to_zone": "Asia/Tokyo"}
    )
    assert response.json["output"]["time"] == "2025-01-15T21:00:00+09:00"


def test_unknown_zones_and_unreadable_times_are_refused(client: HelperClient) -> None:
    bad_zone = client.invoke("convert_time", {"time": "10:00", "from_zone": "Mars/Olympus", "to_zone": "UTC"})
    assert bad_zone.status_code == 422
    assert "unknown time zone" in bad_zone.json["error"]
    traversal = client.invoke("convert_time", {"time": "10:00", "from_zone": "../../etc/passwd", "to_zone": "UTC"})
    assert traversal.status_code == 422
    bad_time = client.invoke("convert_time", {"time": "teatime", "from_zone": "UTC", "to_zone": "UTC"})
    assert bad_time.status_code == 422
    assert "cannot read 'teatime'" in bad_time.json["error"]
