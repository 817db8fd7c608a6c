"""Gateway configuration: a TOML file checked against a declarative schema.

The gateway's own sections are [mqtt], [broker], [store], [policy],
[pipeline], [api] and [log]; every key has a type, a default, a check and a one-line help (the
same text goes into the commented file `terrapin gateway init` writes).
Any other top-level section ([chain], [batch], [rewards], ...) belongs to
another stage: it is kept as a raw dict in `config.sections` for that stage
to validate.

    cfg = load_config("/etc/terrapin/gateway.toml")
    cfg.mqtt.port, cfg.store.path, cfg.sections.get("chain", {})
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from terrapin.gateway.errors import ConfigError

DEFAULT_PATH = Path("/etc/terrapin/gateway.toml")
ENV_PATH = "TERRAPIN_GATEWAY_CONFIG"

# The stages [pipeline] stages can switch on, in the order the server builds them.
STAGES = ("batch", "anchor", "rewards")
# What gateway.toml files written before stages had names list instead.
OLD_STAGE_ENTRIES = {
    "terrapin.gateway.chain.stage:batcher": "batch",
    "terrapin.gateway.chain.stage:anchorer": "anchor",
    "terrapin.gateway.rewards.stage:rewards": "rewards",
    "terrapin.gateway.chain.rewards_stage:rewards": "rewards",
}

# Sections owned by a stage, which validates their keys itself (everything else
# that is not in SCHEMA is a typo: rejected with "did you mean").
STAGE_SECTIONS = ("chain", "rewards")

log = logging.getLogger("terrapin.gateway.config")


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any
    help: str
    check: Any = None  # callable(value) -> error text or None


def _port(v):
    return None if 0 < v < 65536 else "must be a TCP port between 1 and 65535"


def _at_least(n):
    return lambda v: None if v >= n else f"must be at least {n}"


def _one_of(*choices):
    return lambda v: None if v in choices else f"must be one of {', '.join(map(repr, choices))}"


def _stage_names(value: list, where: str) -> list[str]:
    """[pipeline] stages as stage names; old "module:function" entries mapped, once logged."""
    names: list[str] = []
    old = []
    for item in value:
        if isinstance(item, str) and item in OLD_STAGE_ENTRIES:
            old.append(item)
            item = OLD_STAGE_ENTRIES[item]
        if not isinstance(item, str):
            raise ConfigError(f"pipeline.stages{where} entries must be stage names, not {item!r}")
        if item not in STAGES:
            close = difflib.get_close_matches(item, STAGES, n=1)
            raise ConfigError(
                f"pipeline.stages{where}: unknown stage {item!r}",
                hint=f"did you mean {close[0]!r}?" if close else f"stages: {', '.join(STAGES)}",
            )
        if item in names:
            raise ConfigError(f"pipeline.stages{where} lists stage {item!r} twice")
        names.append(item)
    if old:
        log.warning(
            "pipeline.stages%s: module entries are deprecated, write stages = %s",
            where,
            _toml_value(names),
        )
    return names


def _path(v):
    # A NUL byte is no file name: Path.resolve() and open() raise ValueError on it.
    return "must be a file path without NUL characters" if "\0" in v else None


def _tx_template(v):
    return None if not v or "{tx}" in v else "must contain {tx} (where the tx hash goes)"


def _mqtt_prefix(v):
    # A topic prefix the gateway publishes under: no wildcards, no empty levels.
    ok = v and all(level and not set(level) & set("+#\0") for level in v.split("/"))
    return None if ok else "must be an MQTT topic without wildcards or empty levels"


def _ranges(v):
    for unit, pair in v.items():
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in pair)
        if not ok or pair[0] > pair[1]:
            return f"unit {unit!r} needs [low, high] with low <= high"
    return None


def _store_url(v):
    if v and not v.startswith(("postgresql://", "postgres://")):
        return "must be empty (SQLite) or a postgresql:// URL"
    return None


def _share_group(v):
    if v and not all(c.isalnum() or c in "-_" for c in v):
        return "may hold only letters, digits, - and _"
    return None


SCHEMA: dict[str, dict[str, Key]] = {
    "mqtt": {
        "host": Key(str, "127.0.0.1", "Mosquitto host"),
        "port": Key(int, 1883, "Mosquitto port", _port),
        "username": Key(str, "terrapin-gateway", "the gateway's broker user"),
        "password": Key(str, "", "its password (or use password_file)"),
        "password_file": Key(str, "", "file holding the password (first line)", _path),
        "protocol": Key(
            str, "3.1.1", "MQTT version for the gateway's session", _one_of("3.1.1", "5")
        ),
        "client_id": Key(  # Mosquitto from `gateway init` replaces any id with the user name
            str, "terrapin-gateway", "fixed client id = username (the broker binds id to user)"
        ),
        "keepalive": Key(int, 30, "MQTT keepalive, seconds", _at_least(5)),
        "share_group": Key(  # several instances: docs/SCALE.md
            str, "", "MQTT shared-subscription group for readings (empty: none)", _share_group
        ),
        "session_expiry": Key(  # MQTT 5 only; with 3.1.1 see persistent_client_expiration
            int, 14 * 86400, "MQTT 5: broker keeps the session this long, s", _at_least(0)
        ),
        "receive_maximum": Key(
            int, 1000, "MQTT 5: QoS 1 readings in flight to the gateway", _at_least(1)
        ),
        "tls_ca": Key(str, "", "CA file to use TLS to the broker (empty: plain TCP)", _path),
        # Broker quarantine (quarantine.py): a board admission keeps dropping is shut out
        # at Mosquitto (dynamic security plugin) for a cooldown that doubles per offence.
        "quarantine_drops": Key(
            int,
            200,
            "quarantine a board after this many early drops in the window, 0 = no quarantine",
            _at_least(0),
        ),
        "quarantine_burst": Key(
            int, 1000, "quarantine a board sending more readings than this in 1 s", _at_least(1)
        ),
        "quarantine_window": Key(
            (int, float), 10, "quarantine: window the early drops are counted in, s", _at_least(0.1)
        ),
        "quarantine_seconds": Key(
            (int, float), 60, "quarantine: first cooldown, s (doubles per offence)", _at_least(1)
        ),
        "quarantine_max_seconds": Key(
            (int, float), 3600, "quarantine: longest cooldown, s", _at_least(1)
        ),
    },
    "broker": {
        "password_file": Key(
            str, "", "Mosquitto password file `device add` writes board users to", _path
        ),
        "acl_file": Key(str, "", "Mosquitto ACL file (written by `gateway init`)", _path),
        "public_host": Key(str, "", "host name boards use for the broker (credentials output)"),
    },
    "store": {
        "path": Key(str, "/var/lib/terrapin/gateway.db", "SQLite database (WAL, FULL sync)", _path),
        "max_rejections": Key(int, 100_000, "rejected envelopes kept for audit", _at_least(0)),
        "url": Key(
            str, "", "postgresql://user@host/db: PostgreSQL instead of the file", _store_url
        ),
    },
    "policy": {
        "replay_window": Key(
            int, 4096, "seq below highest - window is STALE_SEQUENCE", _at_least(0)
        ),
        "max_clock_skew": Key((int, float), 300, "s a time may be ahead (else flag)", _at_least(0)),
        "max_age": Key(
            (int, float), 30 * 86400, "s a time may be behind (else flag)", _at_least(0)
        ),
        "rate_per_minute": Key(
            (int, float), 0, "readings/min per board, 0 = no limit", _at_least(0)
        ),
        "ranges": Key(dict, {}, "plausible [low, high] per unit, adds to defaults", _ranges),
    },
    "pipeline": {
        "queue_size": Key(
            int, 20_000, "bounded ingest queue (backpressure when full)", _at_least(1)
        ),
        "max_batch": Key(int, 2000, "readings per transaction at most", _at_least(1)),
        # Admission (inbox.py), per board, before decode and signature check.
        "board_rate": Key(
            (int, float), 20, "admission: readings/s per board (sustained), 0 = off", _at_least(0)
        ),
        "board_burst": Key(
            int, 2000, "admission: readings a board may send at once (bucket size)", _at_least(1)
        ),
        "board_share": Key(
            int,
            100,
            "admission: a board's readings held over its rate; more are dropped",
            _at_least(1),
        ),
        "verify_backend": Key(
            str, "coincurve", "signature verifier", _one_of("coincurve", "ecdsa")
        ),
        "workers": Key(
            int,
            2,
            "processes that check and store (sharded by board); 0: in-thread",
            _one_of(*range(9)),
        ),
        "stages": Key(list, [], "chain stages to run: batch, anchor, rewards"),
    },
    "api": {
        "enabled": Key(bool, True, "serve /api/status and /metrics"),
        "host": Key(str, "127.0.0.1", "bind address (keep it local)"),
        "port": Key(int, 8377, "HTTP port", _port),
        "token": Key(
            str, "", "dashboard/API token (bearer, or basic-auth password); required off loopback"
        ),
        "token_file": Key(str, "", "file whose first line is the token (instead of token)", _path),
        "explorer_tx_url": Key(
            str, "", "block explorer link for a tx, {tx} replaced (e.g. .../tx/{tx})", _tx_template
        ),
    },
    "homeassistant": {
        "enabled": Key(
            bool, False, "publish stored readings and MQTT discovery for Home Assistant"
        ),
        "discovery_prefix": Key(
            str, "homeassistant", "Home Assistant's MQTT discovery prefix", _mqtt_prefix
        ),
        "state_prefix": Key(
            str, "terrapin/values", "readings' values go to <state_prefix>/<board>", _mqtt_prefix
        ),
    },
    "log": {
        "level": Key(str, "info", "log level", _one_of("debug", "info", "warning", "error")),
        "format": Key(str, "json", "json lines or key=value text", _one_of("json", "text")),
        "rejection_interval": Key(
            (int, float), 10, "s between log lines per rejection reason", _at_least(0)
        ),
    },
}


class GatewayConfig:
    """Validated settings: `cfg.mqtt.host`, ...; other stages' sections in `cfg.sections`."""

    def __init__(
        self, values: dict[str, dict[str, Any]], sections: dict[str, dict], path: Path | None
    ):
        self.path = path
        self.sections = sections
        for name, keys in values.items():
            setattr(self, name, SimpleNamespace(**keys))

    def section(self, name: str) -> dict:
        """A raw section owned by another stage ({} when absent)."""
        return self.sections.get(name, {})

    def mqtt_password(self) -> str:
        if self.mqtt.password_file:
            try:
                return Path(self.mqtt.password_file).read_text().splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ConfigError(
                    f"cannot read mqtt.password_file {self.mqtt.password_file}: {exc}"
                ) from None
        return self.mqtt.password


def _type_name(t) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a text",
        bool: "true or false",
        dict: "a table",
        list: "a list",
    }
    if isinstance(t, tuple):
        return "a number"
    return names.get(t, t.__name__)


def _line_of(text: str | None, section: str, key: str | None = None) -> str:
    """ ", line N" of a section's header (or of a key inside it) in the TOML text."""
    if text is None:
        return ""
    lines = text.splitlines()
    header = re.compile(rf"^\s*\[+\s*{re.escape(section)}\s*[\].]")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return ""
    if key is None:
        return f", line {start + 1}"
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("["):
            break
        if pattern.match(lines[i]):
            return f", line {i + 1}"
    return ""


def _unknown_section(name: str, where: str, text: str | None) -> ConfigError:
    known = [*SCHEMA, *STAGE_SECTIONS]
    close = difflib.get_close_matches(name, known, n=1)
    return ConfigError(
        f"unknown section [{name}]{where}{_line_of(text, name)}",
        hint=f"did you mean [{close[0]}]?" if close else f"sections: {', '.join(known)}",
    )


def validate(
    data: dict[str, Any], path: Path | None = None, *, text: str | None = None
) -> GatewayConfig:
    """`text`: the TOML the data came from, to name the line of an unknown name."""
    where = f" in {path}" if path else ""
    values: dict[str, dict[str, Any]] = {}
    sections: dict[str, dict] = {}
    for name, raw in data.items():
        if name not in SCHEMA:
            if not isinstance(raw, dict):
                raise ConfigError(f"top-level key {name!r}{where} must be a [section]")
            if name not in STAGE_SECTIONS:
                raise _unknown_section(name, where, text)
            sections[name] = raw
    for name, keys in SCHEMA.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{name}{where} must be a [{name}] section")
        for key in raw:
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(keys)}"
                line = _line_of(text, name, key)
                raise ConfigError(f"unknown setting {name}.{key}{where}{line}", hint=hint)
        out = {}
        for key, spec in keys.items():
            value = raw.get(key, spec.default)
            types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
            if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
                raise ConfigError(
                    f"{name}.{key}{where} must be {_type_name(spec.type)}, not {value!r}",
                    hint=f"{name}.{key}: {spec.help}",
                )
            if spec.check is not None:
                problem = spec.check(value)
                if problem:
                    raise ConfigError(f"{name}.{key}{where} {problem} (got {value!r})")
            out[key] = value
        values[name] = out
    values["pipeline"]["stages"] = _stage_names(values["pipeline"]["stages"], where)
    # A relative store path is relative to the config file.
    store_path = Path(values["store"]["path"])
    if path is not None and not store_path.is_absolute():
        values["store"]["path"] = str((path.parent / store_path).resolve())
    for section, key in (
        ("mqtt", "password_file"),
        ("broker", "password_file"),
        ("broker", "acl_file"),
        ("api", "token_file"),
    ):
        value = values[section][key]
        if path is not None and value and not Path(value).is_absolute():
            values[section][key] = str((path.parent / value).resolve())
    return GatewayConfig(values, sections, path)


def default_path() -> Path:
    return Path(os.environ.get(ENV_PATH) or DEFAULT_PATH)


def load_config(path: str | Path | None = None) -> GatewayConfig:
    p = Path(path) if path else default_path()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"no gateway config at {p}",
            hint="write one with `terrapin gateway init --dir DIR`, then --config DIR/gateway.toml",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from None
    return parse_config(text, p.resolve())


def parse_config(text: str, path: Path | None = None) -> GatewayConfig:
    """A config from TOML text (`path`: where it came from, for messages and relative paths)."""
    where = path or "the config"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or table
        raise ConfigError(f"{where} nests arrays or tables too deeply") from None
    return validate(data, path, text=text)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


toml_value = _toml_value  # public name: `gateway init` and `chain deploy` write with it


def render_config(overrides: dict[str, dict[str, Any]] | None = None) -> str:
    """A commented TOML file with every setting (overrides replace defaults)."""
    overrides = overrides or {}
    lines = [
        "# Terrapin gateway configuration (terrapin gateway run --config THIS_FILE).",
        "# Every setting is shown with its default; relative paths are relative to this file.",
        "# Other stages add their own sections here ([chain], [batch], [rewards]).",
    ]
    for name, keys in SCHEMA.items():
        lines += ["", f"[{name}]"]
        for key, spec in keys.items():
            value = overrides.get(name, {}).get(key, spec.default)
            lines.append(f"# {spec.help}")
            lines.append(f"{key} = {_toml_value(value)}")
    lines += [
        "",
        "# On-chain stages (docs/CHAIN.md, docs/REWARDS.md): batch readings into Merkle",
        "# trees, anchor one root per batch, settle reward epochs. To turn them on, set",
        '#   [pipeline] stages = ["batch", "anchor", "rewards"]',
        "# and add a [chain] section (the embedded chain, or a JSON-RPC URL with a keystore)",
        "# and, for rewards, a [rewards] section.",
    ]
    return "\n".join(lines) + "\n"
