"""A converter helper: units (length, mass, volume, speed, temperature) and time zones.

Its output is data, not a sentence, so the core's model phrases the answer
(``reply="model"``). Its schemas are JSON Schema dicts, to show that style
next to the calculator's marshmallow schemas::

    switchboard-helper run examples/helpers/converter.py --port 8102

Time zones come from the system's tz database through ``zoneinfo`` (on
Windows, ``pip install tzdata``).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from helper_sdk import Helper, HelperError, InvocationContext

helper = Helper("converter", description="Converts units and time zones", version="1.0.0")

# fmt: off
# unit: (quantity, factor to the quantity's base unit); temperature is affine and handled apart
_UNITS: dict[str, tuple[str, float]] = {
    "m": ("length", 1.0), "km": ("length", 1000.0), "cm": ("length", 0.01), "mm": ("length", 0.001),
    "mi": ("length", 1609.344), "yd": ("length", 0.9144), "ft": ("length", 0.3048), "in": ("length", 0.0254),
    "nmi": ("length", 1852.0),
    "kg": ("mass", 1.0), "g": ("mass", 0.001), "mg": ("mass", 1e-6), "t": ("mass", 1000.0),
    "lb": ("mass", 0.45359237), "oz": ("mass", 0.028349523125), "st": ("mass", 6.35029318),
    "l": ("volume", 1.0), "ml": ("volume", 0.001), "m3": ("volume", 1000.0), "gal": ("volume", 3.785411784),
    "qt": ("volume", 0.946352946), "pt": ("volume", 0.473176473), "cup": ("volume", 0.2365882365),
    "floz": ("volume", 0.0295735295625),
    "m/s": ("speed", 1.0), "km/h": ("speed", 1 / 3.6), "mph": ("speed", 0.44704), "kn": ("speed", 1852 / 3600),
}
_TEMPERATURES = {"C": (1.0, 273.15), "F": (5 / 9, 459.67 * 5 / 9), "K": (1.0, 0.0)}  # kelvin = value*a + b
_ALIASES = {
    "meter": "m", "metre": "m", "kilometer": "km", "kilometre": "km", "centimeter": "cm", "centimetre": "cm",
    "millimeter": "mm", "millimetre": "mm", "mile": "mi", "yard": "yd", "foot": "ft", "feet": "ft", "inch": "in",
    "inches": "in", "nautical mile": "nmi", "kilogram": "kg", "kilo": "kg", "gram": "g", "milligram": "mg",
    "tonne": "t", "pound": "lb", "lbs": "lb", "ounce": "oz", "stone": "st", "liter": "l", "litre": "l",
    "milliliter": "ml", "millilitre": "ml", "gallon": "gal", "quart": "qt", "pint": "pt", "fl oz": "floz",
    "fluid ounce": "floz", "kph": "km/h", "kmh": "km/h", "knot": "kn", "kt": "kn", "mps": "m/s",
    "celsius": "C", "°c": "C", "c": "C", "fahrenheit": "F", "°f": "F", "f": "F", "kelvin": "K", "k": "K",
}
# fmt: on

UNITS_IN = {
    "type": "object",
    "properties": {
        "value": {"type": "number", "description": "the amount to convert"},
        "from_unit": {"type": "string", "minLength": 1, "maxLength": 32, "description": "e.g. km, lb, °F, mph"},
        "to_unit": {"type": "string", "minLength": 1, "maxLength": 32},
    },
    "required": ["value", "from_unit", "to_unit"],
    "additionalProperties": False,
}
UNITS_OUT = {
    "type": "object",
    "properties": {
        "value": {"type": "number"},
        "unit": {"type": "string"},
        "quantity": {"type": "string", "enum": ["length", "mass", "volume", "speed", "temperature"]},
        "summary": {"type": "string"},
    },
    "required": ["value", "unit", "quantity", "summary"],
    "additionalProperties": False,
}
TIME_IN = {
    "type": "object",
    "properties": {
        "time": {"type": "string", "description": "HH:MM, or an ISO 8601 date and time (2025-03-30T14:30)"},
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "description": "YYYY-MM-DD; default today"},
        "from_zone": {"type": "string", "minLength": 1, "maxLength": 64, "description": "IANA zone: Europe/Paris"},
        "to_zone": {"type": "string", "minLength": 1, "maxLength": 64},
    },
    "required": ["time", "from_zone", "to_zone"],
    "additionalProperties": False,
}
TIME_OUT = {
    "type": "object",
    "properties": {
        "time": {"type": "string", "description": "ISO 8601 in the target zone"},
        "utc_offset": {"type": "string"},
        "summary": {"type": "string"},
    },
    "required": ["time", "utc_offset", "summary"],
    "additionalProperties": False,
}


@helper.capability(input_schema=UNITS_IN, output_schema=UNITS_OUT)
def convert_units(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    """Convert an amount between units of length, mass, volume, speed or temperature."""
    source, target = unit(data["from_unit"]), unit(data["to_unit"])
    value = float(data["value"])
    if source in _TEMPERATURES or target in _TEMPERATURES:
        if not (source in _TEMPERATURES and target in _TEMPERATURES):
            raise HelperError(f"cannot convert {source} to {target}")
        scale, offset = _TEMPERATURES[source]
        kelvin = value * scale + offset
        scale, offset = _TEMPERATURES[target]
        result, quantity = (kelvin - offset) / scale, "temperature"
    else:
        (quantity, from_factor), (target_quantity, to_factor) = _UNITS[source], _UNITS[target]
        if quantity != target_quantity:
            raise HelperError(f"cannot convert {quantity} ({source}) to {target_quantity} ({target})")
        result = value * from_factor / to_factor
    result = float(f"{result:.10g}")
    return {
        "value": result,
        "unit": target,
        "quantity": quantity,
        "summary": f"{value:g} {source} = {result:g} {target}",
    }


@helper.capability(input_schema=TIME_IN, output_schema=TIME_OUT)
def convert_time(data: dict[str, Any], context: InvocationContext) -> dict[str, Any]:
    """Convert a time of day (and date) from one time zone to another, daylight saving included."""
    source, target = zone(data["from_zone"]), zone(data["to_zone"])
    moment = _moment(data["time"], data.get("date"), source)
    converted = moment.astimezone(target)
    return {
        "time": converted.isoformat(),
        "utc_offset": converted.strftime("%z")[:3] + ":" + converted.strftime("%z")[3:],
        "summary": (f"{moment:%Y-%m-%d %H:%M} in {source.key} is {converted:%Y-%m-%d %H:%M} in {target.key}"),
    }


def unit(name: str) -> str:
    """The canonical symbol of a unit name; HelperError listing the known ones if unknown."""
    cleaned = re.sub(r"\s+", " ", name.strip())
    for candidate in (cleaned, cleaned.lower(), cleaned.lower().removesuffix("s"), cleaned.lower().removesuffix("es")):
        if candidate in _UNITS or candidate in _TEMPERATURES:
            return candidate
        if candidate in _ALIASES:
            return _ALIASES[candidate]
    known = ", ".join([*_UNITS, *_TEMPERATURES])
    raise HelperError(f"unknown unit {name!r}; known: {known}", fields={"unit": [name]})


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise HelperError(
            f"unknown time zone {name!r}: use an IANA name like Europe/Paris or America/New_York"
        ) from None


def _moment(text: str, day: str | None, source: ZoneInfo) -> datetime:
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text.strip()):
            when = date.fromisoformat(day) if day else datetime.now(source).date()
            moment = datetime.combine(when, time.fromisoformat(text.strip().zfill(5)))
        else:
            moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise HelperError(f"cannot read {text!r} as a time: use HH:MM or 2025-03-30T14:30") from None
    if moment.tzinfo is not None:  # an explicit offset wins over from_zone
        return moment
    return moment.replace(tzinfo=source)


if __name__ == "__main__":
    helper.run()
