"""Home Assistant: discovery configs that fit HA's MQTT sensor schema, unit/device-class
pairs HA accepts, templates that render the values (with Jinja2, as HA does), and a live
gateway on a real Mosquitto publishing only stored readings, through the broker ACL
that `gateway init` writes, to Home Assistant's own broker user."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from paho.mqtt.enums import CallbackAPIVersion

from terrapin.gateway import homeassistant as ha
from terrapin.gateway import mosquitto_conf
from terrapin.gateway.homeassistant_publisher import HomeAssistantPublisher
from terrapin.gateway.store import Store
from terrapin.tools.devkit.gatewayhome import GatewayHome, reload_broker, start_broker
from terrapin.tools.devkit.gatewayproc import GatewayThread
from terrapin.tools.devkit.simboard import SimBoard, board_address

# From Home Assistant core, homeassistant/components/sensor/const.py: DEVICE_CLASS_UNITS
# and DEVICE_CLASS_STATE_CLASSES, for the device classes a SenML unit can map to.
HA_DEVICE_CLASS_UNITS: dict[str, set[str | None]] = {
    "temperature": {"°C", "°F", "K"},
    "humidity": {"%"},
    "battery": {"%"},
    "moisture": {"%"},
    "pressure": {"Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi", "mmH₂O"},
    "voltage": {"V", "mV", "µV", "kV", "MV"},
    "current": {"A", "mA"},
    "power": {"mW", "W", "kW", "MW", "GW", "TW"},
    "energy": {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal"},
    "frequency": {"Hz", "kHz", "MHz", "GHz"},
    "illuminance": {"lx"},
    "pm1": {"µg/m³"},
    "pm25": {"µg/m³"},
    "pm10": {"µg/m³"},
    "volatile_organic_compounds": {"µg/m³"},
    "volatile_organic_compounds_parts": {"ppm", "ppb"},
    "carbon_dioxide": {"ppm"},
    "signal_strength": {"dB", "dBm"},
    "sound_pressure": {"dB", "dBA"},
    "speed": {"m/s", "km/h", "mph", "ft/s", "kn", "mm/h", "mm/s", "in/h", "in/d", "mm/d"},
    "wind_speed": {"m/s", "km/h", "mph", "ft/s", "kn", "Beaufort"},
    "precipitation_intensity": {"mm/h", "mm/d", "in/h", "in/d", "mm/s"},
    "distance": {"km", "m", "cm", "mm", "mi", "nmi", "yd", "in", "ft"},
    "duration": {"d", "h", "min", "s", "ms", "μs"},
    "ph": {None},
}
HA_STATE_CLASSES = {"energy": {"total", "total_increasing"}}  # all others: measurement
# HA's MQTT sensor keys (full names), its device block, origin and availability entries.
SENSOR_KEYS = {
    "name", "unique_id", "state_topic", "value_template", "unit_of_measurement",
    "device_class", "state_class", "availability", "availability_mode", "device",
    "origin", "expire_after", "force_update", "icon", "json_attributes_topic",
    "json_attributes_template", "suggested_display_precision", "qos", "enabled_by_default",
    "entity_category", "default_entity_id", "encoding", "payload_available",
    "payload_not_available",
}  # fmt: skip
DEVICE_KEYS = {
    "identifiers", "connections", "name", "manufacturer", "model", "model_id",
    "sw_version", "hw_version", "serial_number", "suggested_area", "via_device",
    "configuration_url",
}  # fmt: skip
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
AVAILABILITY_KEYS = {"topic", "payload_available", "payload_not_available", "value_template"}
TOPIC_LEVEL = r"^[A-Za-z0-9_-]+$"

jinja = ImmutableSandboxedEnvironment()  # what HA renders MQTT templates with


def render(template: str, payload: bytes) -> str:
    value = payload.decode()
    try:
        value_json = json.loads(value)
    except ValueError:
        value_json = None
    return jinja.from_string(template).render(value=value, value_json=value_json).strip()


def check_discovery(topic: str, config: dict, prefix: str = "homeassistant") -> None:
    """HA's MQTT discovery rules for a sensor, as its docs and schema state them."""
    import re

    parts = topic.split("/")
    assert parts[0] == prefix and parts[1] == "sensor" and parts[-1] == "config", topic
    assert len(parts) == 5 and all(re.match(TOPIC_LEVEL, p) for p in parts[2:4]), topic
    assert set(config) <= SENSOR_KEYS, set(config) - SENSOR_KEYS
    assert config["state_topic"] and "#" not in config["state_topic"]
    assert "+" not in config["state_topic"]
    assert re.match(r"^[A-Za-z0-9_-]+$", config["unique_id"])
    assert config["value_template"].startswith("{{") and config["value_template"].endswith("}}")
    device = config["device"]
    assert set(device) <= DEVICE_KEYS and device["identifiers"] and device["name"]
    assert set(config["origin"]) <= ORIGIN_KEYS and config["origin"]["name"]
    for entry in config["availability"]:
        assert set(entry) <= AVAILABILITY_KEYS and entry["topic"]
    dc = config.get("device_class")
    if dc is not None:
        assert config.get("unit_of_measurement") in HA_DEVICE_CLASS_UNITS[dc], config
        assert config["state_class"] in HA_STATE_CLASSES.get(dc, {"measurement"}), config
    else:
        assert config["state_class"] == "measurement"


def test_every_mapped_unit_is_one_home_assistant_accepts():
    names = ["temperature", "pm2_5", "pm10", "pm1", "voc", "co2", "noise", "rssi", "wind",
             "battery", "soil_moisture", "x"]  # fmt: skip
    for senml in ha.SENML_UNITS:
        for name in names:
            unit = ha.ha_unit(senml, name)
            if unit.device_class is not None:
                assert unit.unit in HA_DEVICE_CLASS_UNITS[unit.device_class], (senml, name)
                assert unit.state_class in HA_STATE_CLASSES.get(unit.device_class, {"measurement"})
    assert ha.ha_unit("Cel", "t") == ha.Unit("°C", "temperature")
    assert ha.ha_unit("ug/m3", "pm2_5").device_class == "pm25"
    assert ha.ha_unit("ug/m3", "dust").device_class is None  # not a guess
    assert ha.ha_unit("furlong", "x") == ha.Unit("furlong")  # shown as it is, no class


def test_discovery_configs_fit_the_schema_and_render_the_value():
    board = "4b62683727b68dce2ae023e62a98b98268e89e55"
    records = [("simulated.temperature", "Cel", 19.100000381469727), ("humidity", "%RH", 48.25)]
    state = ha.state_payload(12, 1_790_000_000, records)
    assert json.loads(state) == {
        "seq": 12,
        "time": "2026-09-21T14:13:20Z",
        "sensors": {"simulated.temperature": 19.1, "humidity": 48.25},
    }
    for name, unit, _ in records:
        config = ha.discovery_config(board, name, unit, state_prefix="terrapin/values")
        topic = ha.discovery_topic("homeassistant", board, name)
        check_discovery(topic, config)
        assert config["state_topic"] == f"terrapin/values/{board}"
        assert config["availability"][0]["topic"] == f"terrapin/v1/{board}/status"
    config = ha.discovery_config(board, "simulated.temperature", "Cel", state_prefix="s")
    assert render(config["value_template"], state) == "19.1"
    avail = config["availability"][0]["value_template"]
    assert render(avail, b'{"state": "online", "fw": "0.1.0"}') == "online"
    assert render(avail, b"offline") == "offline"


def test_a_hostile_record_name_never_reaches_a_topic_or_template():
    sent: list[tuple[str, bytes, bool]] = []
    settings = type("S", (), {"discovery_prefix": "homeassistant", "state_prefix": "v"})()
    pub = HomeAssistantPublisher(settings, lambda t, p, r: sent.append((t, p, r)))
    board = "aa" * 20
    evil = "x'] }}{{ cycler.__init__ }}"
    pub.publish([(board, 1, 0, [[evil, "Cel", 1.0], ["t/#", "Cel", 2.0], ["ok", "Cel", 3.0]])])
    topics = [t for t, _p, _r in sent]
    assert topics == [f"homeassistant/sensor/terrapin_{board}/ok/config", f"v/{board}"]
    assert json.loads(sent[-1][1])["sensors"] == {"ok": 3}
    assert pub.skipped_names == 2 and all(r for _t, _p, r in sent)
    # An older reading (an outbox replay after a newer one) does not overwrite the state.
    pub.publish([(board, 0, 0, [["ok", "Cel", 9.0]])])
    assert len(sent) == 2


class HomeAssistantClient:
    """Home Assistant's side: its own broker user, subscribed as its MQTT integration is."""

    def __init__(self, port: int, password: str):
        self.messages: list[mqtt.MQTTMessage] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=mosquitto_conf.HA_USER)
        c.username_pw_set(mosquitto_conf.HA_USER, password)
        c.on_connect = lambda cl, *a: (
            cl.subscribe([("homeassistant/#", 1), ("terrapin/values/#", 1)]),
            self.ready.set(),
        )
        c.on_message = lambda _c, _u, msg: self._got(msg)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10), "Home Assistant's user could not connect"
        time.sleep(0.3)  # the SUBACK, and the retained messages

    def _got(self, msg) -> None:
        with self.lock:
            self.messages.append(msg)

    def topic(self, prefix: str) -> list[mqtt.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.topic.startswith(prefix)]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(check, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.1)


@pytest.fixture
def ha_gateway(tmp_path, mosquitto_exe):
    home = GatewayHome(tmp_path / "gw")
    text = home.config_path.read_text().replace(
        "[homeassistant]\n# publish stored readings and MQTT discovery for Home Assistant\n"
        "enabled = false",
        "[homeassistant]\nenabled = true",
    )
    assert "enabled = true" in text, "gateway init wrote no [homeassistant] section"
    home.config_path.write_text(text)
    ha_password = mosquitto_conf.random_password()
    mosquitto_conf.set_user(home.dir / "mosquitto" / "passwd", mosquitto_conf.HA_USER, ha_password)
    broker = start_broker(home)
    key, password = home.add_sim_board()
    # A label: the device's name in Home Assistant.
    store = Store(home.db_path)
    store.add_device(board_address(key), label="garden shed")
    store.close()
    reload_broker(broker)
    gw = GatewayThread(home.config, workers=2).start(timeout=60)  # merged worker results
    board = SimBoard("127.0.0.1", home.mqtt_port, key, password=password).start()
    client = HomeAssistantClient(home.mqtt_port, ha_password)
    try:
        yield home, gw, board, client, ha_password
    finally:
        client.stop()
        board.stop()
        gw.stop()
        broker.stop()


RECORDS = (("simulated.temperature", "Cel", 19.1), ("humidity", "%RH", 48.25))


def test_stored_readings_reach_home_assistant_and_rejected_ones_never(ha_gateway):
    home, gw, board, client, ha_password = ha_gateway
    addr = board.hex
    # The board's retained status: what availability follows.
    board.client.publish(f"terrapin/v1/{addr}/status", b'{"state":"online","fw":"0.1.0"}', 1, True)
    time.sleep(0.3)
    sent = {seq: board.envelope(seq, t=1_790_000_000 + seq, records=RECORDS) for seq in (1, 2, 3)}
    for seq, envelope in sent.items():
        board.publish(envelope, seq)
    assert board.wait_settled([1, 2, 3], timeout=20)
    state_prefix = f"terrapin/values/{addr}"
    wait_until(lambda: len(client.topic(state_prefix)) == 3, what="3 states")

    states = [json.loads(m.payload) for m in client.topic(state_prefix)]
    assert [s["seq"] for s in states] == [1, 2, 3]
    assert states[-1]["sensors"] == {"simulated.temperature": 19.1, "humidity": 48.25}
    configs = {m.topic: json.loads(m.payload) for m in client.topic("homeassistant/")}
    assert set(configs) == {
        f"homeassistant/sensor/terrapin_{addr}/simulated_temperature/config",
        f"homeassistant/sensor/terrapin_{addr}/humidity/config",
    }
    for topic, config in configs.items():
        check_discovery(topic, config)
        assert config["state_topic"] == state_prefix
        assert config["device"]["sw_version"] == "0.1.0"
        assert config["device"]["name"] == "garden shed"
    temp = configs[f"homeassistant/sensor/terrapin_{addr}/simulated_temperature/config"]
    assert temp["device_class"] == "temperature" and temp["unit_of_measurement"] == "°C"
    assert render(temp["value_template"], client.topic(state_prefix)[-1].payload) == "19.1"
    assert configs[f"homeassistant/sensor/terrapin_{addr}/humidity/config"]["unique_id"] == (
        f"terrapin_{addr}_humidity"
    )

    # A rejected reading (bad signature) and a duplicate: nothing new reaches HA.
    bad = bytearray(board.envelope(4, records=RECORDS))
    bad[-1] ^= 1
    board.publish(bytes(bad), 4)
    board.publish(sent[3], 3)  # the same bytes again: a duplicate
    wait_until(lambda: gw.counts["rejected_total"] == 1 and gw.counts["duplicate"] == 1)
    board.publish(board.envelope(5, records=RECORDS), 5)
    assert board.wait_settled([5], timeout=20)
    wait_until(lambda: len(client.topic(state_prefix)) == 4, what="the 4th state")
    time.sleep(0.3)
    assert [json.loads(m.payload)["seq"] for m in client.topic(state_prefix)] == [1, 2, 3, 5]
    assert len(client.topic("homeassistant/")) == 2  # announced once

    # A board cannot speak for the gateway: the ACL drops its writes to HA's topics.
    spoof = b'{"sensors": {"simulated.temperature": -99}}'
    board.client.publish(state_prefix, spoof, 1, True)
    board.client.publish(f"homeassistant/sensor/terrapin_{addr}/evil/config", b"{}", 1, True)
    time.sleep(0.5)
    assert len(client.topic(state_prefix)) == 4 and len(client.topic("homeassistant/")) == 2

    # Home Assistant restarting: discovery and the last state are retained.
    later = HomeAssistantClient(home.mqtt_port, ha_password)
    try:
        retained = later.topic("homeassistant/") + later.topic(state_prefix)
        assert len(retained) == 3 and all(m.retain for m in retained)
        assert json.loads(later.topic(state_prefix)[0].payload)["seq"] == 5
    finally:
        later.stop()


def test_shortest_gives_the_boards_float32_back():
    import struct

    def f32(x: float) -> float:
        return struct.unpack("<f", struct.pack("<f", x))[0]

    for x in (19.1, 21.5, 48.25, -3.3e-5, 0.1, 1013.25, 3.4e37, 1e-30):
        short = ha.shortest(f32(x))
        assert f32(float(short)) == f32(x) and len(repr(short)) <= len(repr(x)) + 2, x
    assert ha.shortest(f32(19.1)) == 19.1 and ha.shortest(20.0) == 20
    assert ha.shortest(0.1 + 0.2) == 0.1 + 0.2  # not a float32: unchanged


@pytest.mark.parametrize("prefix", ["a/#", "a/+/b", "", "a//b", "/a"])
def test_a_topic_prefix_with_wildcards_or_empty_levels_is_a_config_error(prefix):
    from terrapin.gateway.config import parse_config
    from terrapin.gateway.errors import ConfigError

    with pytest.raises(ConfigError, match=r"homeassistant\.state_prefix must be an MQTT topic"):
        parse_config(f'[homeassistant]\nstate_prefix = "{prefix}"\n')
    cfg = parse_config('[homeassistant]\nenabled = true\nstate_prefix = "home/terrapin"\n')
    assert cfg.homeassistant.enabled and cfg.homeassistant.discovery_prefix == "homeassistant"
