"""What the host refuses to write to a board's config, from the board's own schema.

`terrapin device provision` checks a config with terrapin.firmware.config
(the schema the board validates its file with at boot) before anything is
written, and is stricter than the board: an unknown key is an error here (the
board only warns and ignores it). This part runs on the host only, so it does
not ship in the board's resident firmware.
"""

from __future__ import annotations

import json

from terrapin.firmware.config import validate


def _present(given: dict, label: str) -> bool:
    # Whether the key a message is about ("broker.port", "sensors[0] (adc).pin",
    # "wifi.ssid") was in `given`: the host checks only what it is about to write.
    path = label.split(" ")[0].split(":")[0]
    node = given
    for part in path.split("."):
        part = part.split("[")[0]
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def host_problems(given: object, board: str = "esp32") -> list[str]:
    """Every error about a key the host writes, every sensor error, and any
    unknown key (with its "did you mean" hint)."""
    if not isinstance(given, dict):
        return ["config must be a JSON object {...}"]
    _data, errors, sensor_errors, warnings = validate(json.loads(json.dumps(given)), board)
    out = [msg for msg in errors if _present(given, msg)]
    out.extend(sensor_errors)
    for msg in warnings:
        if msg.startswith("unknown key") or ": unknown key" in msg:
            out.append(msg.replace(" ignored", ""))
    return out
