"""Home Assistant MQTT discovery: a board's stored readings as HA sensors (pure mapping,
no MQTT here; gateway/homeassistant_publisher.py publishes).

Per board one state topic, `<state_prefix>/<board hex>`, carrying its latest stored
reading as JSON: {"seq": 5, "time": "2026-12-06T21:40:05Z", "sensors": {"temperature":
21.5, ...}}. Per (board, record name) one retained discovery config at
`<discovery_prefix>/sensor/terrapin_<board>/<name>/config`, whose value_template picks
that record from the state; unit and device class come from the SenML unit
(SENML_UNITS), availability from the board's own retained status topic (its last will
is "offline").

Record names come from boards, and a board may be hostile: a name goes into a topic
and a Jinja template only if it matches SAFE_NAME, else that record is not published.
"""

from __future__ import annotations

import json
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

from terrapin.gateway.protocol import topics

# Letters, digits, '_', '-', '.': never a quote, brace or topic separator.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MODEL = "Terrapin sensor board"
ORIGIN = {"name": "Terrapin gateway"}


@dataclass(frozen=True)
class Unit:
    """How Home Assistant shows a SenML unit: its unit text and the device class."""

    unit: str | None
    device_class: str | None = None
    state_class: str = "measurement"


# SenML unit (RFC 8428 and its registry) -> Home Assistant. Where one unit fits several
# device classes, NAME_HINTS below decide by the record's name; else no device class.
SENML_UNITS: dict[str, Unit] = {
    "Cel": Unit("°C", "temperature"),
    "K": Unit("K", "temperature"),
    "%RH": Unit("%", "humidity"),
    "%EL": Unit("%", "battery"),
    "Pa": Unit("Pa", "pressure"),
    "hPa": Unit("hPa", "pressure"),
    "kPa": Unit("kPa", "pressure"),
    "bar": Unit("bar", "pressure"),
    "V": Unit("V", "voltage"),
    "mV": Unit("mV", "voltage"),
    "A": Unit("A", "current"),
    "mA": Unit("mA", "current"),
    "W": Unit("W", "power"),
    "kW": Unit("kW", "power"),
    "mW": Unit("mW", "power"),
    "J": Unit("J", "energy", "total_increasing"),
    "Wh": Unit("Wh", "energy", "total_increasing"),
    "kWh": Unit("kWh", "energy", "total_increasing"),
    "Hz": Unit("Hz", "frequency"),
    "lx": Unit("lx", "illuminance"),
    "ug/m3": Unit("µg/m³"),
    "ppm": Unit("ppm"),
    "ppb": Unit("ppb"),
    "dBm": Unit("dBm", "signal_strength"),
    "dB": Unit("dB"),
    "m/s": Unit("m/s", "speed"),
    "km/h": Unit("km/h", "speed"),
    "mm/h": Unit("mm/h", "precipitation_intensity"),
    "m": Unit("m", "distance"),
    "km": Unit("km", "distance"),
    "s": Unit("s", "duration"),
    "ms": Unit("ms", "duration"),
    "min": Unit("min", "duration"),
    "h": Unit("h", "duration"),
    "%": Unit("%"),
    "pH": Unit(None, "ph"),
    "count": Unit(None),
    "/": Unit(None),
    "deg": Unit("°"),
    "lat": Unit("°"),
    "lon": Unit("°"),
}

# (SenML unit, words in the record's name) -> device class, first match wins.
NAME_HINTS: list[tuple[str, tuple[str, ...], str]] = [
    ("ug/m3", ("pm2_5", "pm2.5", "pm25"), "pm25"),
    ("ug/m3", ("pm10",), "pm10"),
    ("ug/m3", ("pm1",), "pm1"),
    ("ug/m3", ("voc",), "volatile_organic_compounds"),
    ("ppm", ("co2",), "carbon_dioxide"),
    ("ppm", ("voc",), "volatile_organic_compounds_parts"),
    ("ppb", ("voc",), "volatile_organic_compounds_parts"),
    ("dB", ("noise", "sound", "spl"), "sound_pressure"),
    ("dB", ("rssi", "signal", "snr"), "signal_strength"),
    ("m/s", ("wind",), "wind_speed"),
    ("km/h", ("wind",), "wind_speed"),
    ("%", ("batt",), "battery"),
    ("%", ("moist", "soil"), "moisture"),
]


def ha_unit(senml_unit: str, name: str) -> Unit:
    """The Home Assistant unit and device class of one record. An unknown unit is shown
    as it is, without a device class (HA then treats it as a plain number)."""
    base = SENML_UNITS.get(senml_unit)
    if base is None:
        return Unit(senml_unit or None)
    lowered = name.lower()
    for unit, words, device_class in NAME_HINTS:
        if unit == senml_unit and any(w in lowered for w in words):
            return Unit(base.unit, device_class, base.state_class)
    return base


def shortest(value: float) -> float | int:
    """A float32 reading (the board's float) as the shortest number that gives it back:
    19.1, not 19.100000381469727. Other values unchanged."""
    if not isinstance(value, float) or value != value or value in (float("inf"), float("-inf")):
        return value
    if value.is_integer() and abs(value) < 1e15:
        return int(value)
    if abs(value) < 3.4e38 and struct.unpack("<f", struct.pack("<f", value))[0] == value:
        for digits in range(1, 10):
            short = float(f"{value:.{digits}g}")
            if struct.unpack("<f", struct.pack("<f", short))[0] == value:
                return short
    return value


def state_topic(state_prefix: str, board: str) -> str:
    return f"{state_prefix}/{board}"


def node_id(board: str) -> str:
    return f"terrapin_{board}"


def object_id(name: str) -> str:
    """A record name as a topic level and an id: [A-Za-z0-9_-] (dots become '_')."""
    return name.replace(".", "_")


def discovery_topic(discovery_prefix: str, board: str, name: str) -> str:
    return f"{discovery_prefix}/sensor/{node_id(board)}/{object_id(name)}/config"


def state_payload(seq: int, t: int, records: list[tuple[str, str, float]]) -> bytes:
    """The board's state: seq, the board's time (ISO 8601 UTC; null when its clock was
    not set) and each safely named record's value."""
    sensors = {n: shortest(v) for n, _u, v in records if SAFE_NAME.match(n)}
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None
    return json.dumps({"seq": seq, "time": when, "sensors": sensors}, sort_keys=True).encode()


def discovery_config(
    board: str,
    name: str,
    senml_unit: str,
    *,
    state_prefix: str,
    label: str = "",
    firmware: str | None = None,
    version: str = "",
) -> dict[str, Any]:
    """The MQTT discovery config of one sensor (a record name of a board)."""
    unit = ha_unit(senml_unit, name)
    config: dict[str, Any] = {
        "name": name.replace("_", " ").replace(".", " ").strip().capitalize(),
        "unique_id": f"{node_id(board)}_{object_id(name)}",
        "state_topic": state_topic(state_prefix, board),
        "value_template": f"{{{{ value_json.sensors['{name}'] }}}}",
        "state_class": unit.state_class,
        "availability": [
            {
                "topic": topics.status_topic(bytes.fromhex(board)),
                # The board's status is JSON while it runs and "offline" (its last will).
                "value_template": "{{ 'offline' if value == 'offline' else 'online' }}",
            }
        ],
        "device": {
            "identifiers": [node_id(board)],
            "name": label or f"Terrapin {board[:8]}",
            "manufacturer": "Terrapin",
            "model": MODEL,
            "serial_number": "0x" + board,
        },
        "origin": dict(ORIGIN, sw_version=version) if version else dict(ORIGIN),
    }
    if unit.unit is not None:
        config["unit_of_measurement"] = unit.unit
    if unit.device_class is not None:
        config["device_class"] = unit.device_class
    if firmware:
        config["device"]["sw_version"] = firmware
    return config
